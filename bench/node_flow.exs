# Node mode's flow control (issue 13): the time `seq 1 N` takes to reach its
# owner with the default flow (`flow: :queue_len`, the owner only receives)
# against `flow: :ack` (the owner acks every message), on the bench's node.
#
# bench.exs runs it as the scenario `node_flow` (Bench.NodeFlow.run/3), the
# two flows alternating, after the main node is up. Each run opens `seq`
# through the node's own `{:open, ...}` call (docs/node.md), counts the bytes
# of every `{:data, _}` message until the `{:EXIT, pid, :normal}`, and checks
# the count against the length of seq's output.

defmodule Bench.NodeFlow do
  @moduledoc false

  @flows [:queue_len, :ack]

  @doc """
  `rounds` runs of each flow, alternating (the first flow swaps every
  round), with `seq 1 lines` against `node`. Returns a map of the times in ms
  per flow and the ratio default / ack per round.
  """
  def run(node, lines, rounds) do
    want = seq_bytes(lines)

    runs =
      for round <- 1..rounds, flow <- rotate(@flows, round) do
        {flow, once(node, flow, lines, want)}
      end

    ms = fn flow -> for {^flow, t} <- runs, do: t end
    ratios = Enum.zip_with(ms.(:queue_len), ms.(:ack), &(&1 / &2))
    %{lines: lines, bytes: want, queue_len: ms.(:queue_len), ack: ms.(:ack), ratios: ratios}
  end

  defp rotate(flows, round), do: if(rem(round, 2) == 0, do: Enum.reverse(flows), else: flows)

  defp once(node, flow, lines, want) do
    opts = if flow == :ack, do: %{flow: :ack}, else: %{}
    t0 = System.monotonic_time(:microsecond)

    {:ok, pid} =
      GenServer.call(
        {:proton_stream, node},
        {:open, "seq", ["1", "#{lines}"], opts, self()},
        30_000
      )

    got = drain(pid, flow, 0)
    ms = (System.monotonic_time(:microsecond) - t0) / 1000

    if got != want,
      do:
        raise(Bench.IntegrityError, message: "node flow #{flow}: #{got} of #{want} bytes of seq")

    ms
  end

  defp drain(pid, flow, acc) do
    receive do
      {^pid, {:data, d}} ->
        if flow == :ack, do: send(pid, {self(), {:ack, byte_size(d)}})
        drain(pid, flow, acc + byte_size(d))

      {:EXIT, ^pid, :normal} ->
        acc

      {:EXIT, ^pid, reason} ->
        raise "node flow #{flow}: seq ended with #{inspect(reason)}"
    after
      30_000 -> raise "node flow #{flow}: no message from seq for 30 s"
    end
  end

  # The length of `seq 1 n`'s output: every number's digits and a newline.
  defp seq_bytes(n) do
    Enum.reduce(1..String.length("#{n}"), 0, fn d, acc ->
      lo = Integer.pow(10, d - 1)
      hi = min(n, Integer.pow(10, d) - 1)
      if hi >= lo, do: acc + (hi - lo + 1) * (d + 1), else: acc
    end)
  end

  @doc "The result of run/3 as a markdown section for docs/benchmarks.md."
  def markdown(r) do
    med = &median/1
    ratio = med.(r.ratios)
    mark = if ratio <= 1.5, do: "✅", else: "❌"

    """

    ### Node mode's flow control (bench/node_flow.exs)

    `seq 1 #{r.lines}` (#{r.bytes} bytes) through the bench's `ps_port node`, opened
    with its own `{:open, ...}` call, until the exit message, every byte counted;
    the default flow (`:queue_len`: the owner only receives, the node asks its VM for
    the queue's length) against `flow: :ack` (the owner acks every message),
    #{length(r.ratios)} runs each, alternating. Goal (issue 13): default ≤ 1.5× the
    time of `:ack`.

    | flow | ms, median (min–max) |
    |---|---|
    | default (`:queue_len`) | #{fmt(med.(r.queue_len))} (#{fmt(Enum.min(r.queue_len))}–#{fmt(Enum.max(r.queue_len))}) |
    | `flow: :ack` | #{fmt(med.(r.ack))} (#{fmt(Enum.min(r.ack))}–#{fmt(Enum.max(r.ack))}) |
    | default / `:ack` | #{fmt(ratio, 2)}× (#{fmt(Enum.min(r.ratios), 2)}–#{fmt(Enum.max(r.ratios), 2)}) ≤ 1.50× #{mark} |
    """
  end

  defp median(xs) do
    s = Enum.sort(xs)
    n = length(s)

    if rem(n, 2) == 1,
      do: Enum.at(s, div(n, 2)),
      else: (Enum.at(s, div(n, 2) - 1) + Enum.at(s, div(n, 2))) / 2
  end

  # ms with one decimal, ratios with two.
  defp fmt(x, decimals \\ 1), do: :erlang.float_to_binary(x / 1, decimals: decimals)
end
