# Memory of a slow stream!/3 consumer: run from elixir_shim/ with
#   mix run ../bench/stream_memory.exs [MiB] [pause_every_n_chunks]
# Prints how far the VM's total memory rose above its level before the run
# while MiB of output went through a consumer that sleeps 1 ms every N chunks.
{mib, every} =
  case System.argv() do
    [mib, every] -> {String.to_integer(mib), String.to_integer(every)}
    [mib] -> {String.to_integer(mib), 8}
    [] -> {1024, 8}
  end

size = mib * 1024 * 1024
for pid <- Process.list(), do: :erlang.garbage_collect(pid)
before = :erlang.memory(:total)
t0 = System.monotonic_time(:millisecond)

{bytes, peak, chunks} =
  ProtonStream.stream!("head", ["-c", "#{size}", "/dev/zero"])
  |> Enum.reduce({0, 0, 0}, fn chunk, {bytes, peak, n} ->
    if rem(n, every) == 0, do: Process.sleep(1)
    {bytes + byte_size(chunk), max(peak, :erlang.memory(:total)), n + 1}
  end)

ms = System.monotonic_time(:millisecond) - t0

IO.puts(
  "#{div(bytes, 1024 * 1024)} MiB in #{chunks} chunks over #{ms} ms; " <>
    "VM total before #{div(before, 1024)} KiB, peak #{div(peak, 1024)} KiB, " <>
    "growth #{div(peak - before, 1024)} KiB"
)
