# Where the CPU goes when N programs stream at once: plain Ports against the
# shared ps_port, alternating, with the CPU time of each side read from
# /proc. Run from elixir_shim/ (after `mix compile`, so priv/ holds the
# ps_port to measure):
#
#   flock /tmp/ps_bench.lock mix run --no-start ../bench/cpu_split.exs \
#     [--rounds 5] [--children 8] [--bytes 268435456] [--window BYTES]
#
# Each round runs N × `head -c BYTES /dev/zero` at once, each drained by a
# process of its own, through N plain Ports and through ProtonStream.open/3
# (the shared ps_port; `--window` sets :stdio_window), the order rotating.
# Per run it prints MB/s and, in ms of CPU: the BEAM (every thread), the
# shared ps_port (and its context switches), and the `head`s (the children's time of their parent:
# erl_child_setup for the plain Ports, ps_port for the shared one, which
# both reap them), and the whole machine's busy time from /proc/stat, then
# the medians. On 2 cores the ratio of throughputs follows the ratio of the
# CPU each side needs per byte (docs/benchmarks.md, "Throughput, 8 at once").

defmodule Bench.CpuSplit do
  @clk_ms 1000 / 100

  def main(argv) do
    {opts, _, invalid} =
      OptionParser.parse(argv,
        strict: [rounds: :integer, children: :integer, bytes: :integer, window: :integer]
      )

    if invalid != [], do: raise(ArgumentError, "unknown arguments #{inspect(invalid)}")
    {:ok, _} = Application.ensure_all_started(:proton_stream)
    rounds = Keyword.get(opts, :rounds, 5)
    n = Keyword.get(opts, :children, 8)
    bytes = Keyword.get(opts, :bytes, 268_435_456)
    open_opts = if w = opts[:window], do: [stdio_window: w], else: []
    head = System.find_executable("head") || raise "head is not on PATH"
    # The shared ps_port starts with the first open.
    Task.async(fn -> drain(open(:shared, head, 1_000_000, open_opts)) end) |> Task.await()
    IO.puts("#{n} × head -c #{bytes}, #{rounds} rounds, load #{load()}")

    rows =
      for r <- 1..rounds do
        order = if rem(r, 2) == 0, do: [:plain, :shared], else: [:shared, :plain]
        res = Map.new(order, &{&1, run(&1, head, bytes, n, open_opts)})
        IO.puts("round #{r}: #{line(:plain, res.plain)} | #{line(:shared, res.shared)}")
        res
      end

    ratio = rows |> Enum.map(&(&1.shared.mbps / &1.plain.mbps)) |> median()
    IO.puts("median: #{median_line(rows, :plain)} | #{median_line(rows, :shared)}")
    IO.puts("shared / plain: #{Float.round(ratio, 3)}; load #{load()}")
  end

  defp line(impl, s),
    do:
      "#{impl} #{round(s.mbps)} MB/s, CPU ms: BEAM #{s.beam} ps_port #{s.ps_port} " <>
        "(#{s.ps_port_cs} switches) heads #{s.heads} machine #{s.machine}"

  defp median_line(rows, impl) do
    m = fn key -> rows |> Enum.map(&Map.fetch!(&1[impl], key)) |> median() end

    "#{impl} #{round(m.(:mbps))} MB/s, BEAM #{m.(:beam)} ps_port #{m.(:ps_port)} " <>
      "(#{m.(:ps_port_cs)} switches) " <>
      "heads #{m.(:heads)} machine #{m.(:machine)}"
  end

  defp median(list), do: list |> Enum.sort() |> Enum.at(div(length(list), 2))

  defp run(impl, head, bytes, n, open_opts) do
    beam = System.pid()
    ps_port = ProtonStream.SharedPort.os_pid()
    reaper = if impl == :plain, do: child_setup(beam), else: ps_port
    before = sample(beam, ps_port, reaper)
    t0 = System.monotonic_time(:microsecond)

    got =
      1..n
      |> Enum.map(fn _ ->
        Task.async(fn -> drain(open(impl, head, bytes, open_opts)) end)
      end)
      |> Task.await_many(600_000)

    dt = System.monotonic_time(:microsecond) - t0
    after_ = sample(beam, ps_port, reaper)
    for g <- got, g != bytes, do: raise("#{impl}: #{g} bytes of #{bytes} arrived")
    diff = Map.new(before, fn {k, v} -> {k, round(after_[k] - v)} end)

    Map.merge(diff, %{
      mbps: n * bytes / dt,
      ps_port: if(impl == :plain, do: 0, else: diff.ps_port),
      ps_port_cs: if(impl == :plain, do: 0, else: diff.ps_port_cs)
    })
  end

  defp open(:plain, head, bytes, _opts) do
    Port.open({:spawn_executable, head}, [
      :binary,
      :exit_status,
      :use_stdio,
      args: ["-c", "#{bytes}", "/dev/zero"]
    ])
  end

  defp open(:shared, _head, bytes, opts) do
    Process.flag(:trap_exit, true)
    {:ok, ps} = ProtonStream.open("head", ["-c", "#{bytes}", "/dev/zero"], opts)
    ps
  end

  defp drain(h), do: drain(h, 0)

  defp drain(h, acc) do
    receive do
      {^h, {:data, d}} -> drain(h, acc + byte_size(d))
      {^h, {:exit_status, 0}} -> acc
      {:EXIT, ^h, :normal} -> acc
      {^h, {:exit_status, s}} -> raise "head exited with #{s}"
      {:EXIT, ^h, reason} -> raise "head exited: #{inspect(reason)}"
    after
      60_000 -> raise "no output for 60 s"
    end
  end

  # erl_child_setup forks the plain Ports' programs and reaps them.
  defp child_setup(beam) do
    {out, 0} = System.cmd("pgrep", ["-P", beam, "erl_child_setup"])
    out |> String.trim() |> String.to_integer()
  end

  defp sample(beam, ps_port, reaper) do
    %{
      beam: threads_cpu(beam),
      ps_port: threads_cpu(ps_port),
      ps_port_cs: threads_switches(ps_port),
      heads: children_cpu(reaper),
      machine: machine_busy()
    }
  end

  # utime + stime of every thread of pid, in ms.
  defp threads_cpu(pid),
    do: sum_threads(pid, "stat", &(ticks(&1, 11) + ticks(&1, 12))) * @clk_ms

  # Voluntary and involuntary context switches of every thread of pid.
  defp threads_switches(pid), do: sum_threads(pid, "status", &switches/1)

  # The sum of count.(file) over pid's threads (/proc/PID/task/TID/file);
  # 0 for no pid or a thread that has gone.
  defp sum_threads(nil, _file, _count), do: 0

  defp sum_threads(pid, file, count) do
    case File.ls("/proc/#{pid}/task") do
      {:ok, tids} ->
        Enum.reduce(tids, 0, fn tid, acc ->
          case File.read("/proc/#{pid}/task/#{tid}/#{file}") do
            {:ok, text} -> acc + count.(text)
            {:error, _} -> acc
          end
        end)

      {:error, _} ->
        0
    end
  end

  defp switches(status) do
    for line <- String.split(status, "\n"),
        String.ends_with?(hd(String.split(line, ":")), "ctxt_switches"),
        reduce: 0 do
      acc -> acc + (line |> String.split() |> List.last() |> String.to_integer())
    end
  end

  # cutime + cstime: the CPU of pid's reaped children, in ms.
  defp children_cpu(pid) do
    stat = File.read!("/proc/#{pid}/stat")
    (ticks(stat, 13) + ticks(stat, 14)) * @clk_ms
  end

  # Field i (0 = state) after the command name of a /proc stat line.
  defp ticks(stat, i) do
    [_, rest] = String.split(stat, ") ", parts: 2)
    rest |> String.split(" ") |> Enum.at(i) |> String.to_integer()
  end

  # Every CPU's busy time (user, nice, system, irq, softirq), in ms.
  defp machine_busy do
    ["cpu" | fields] =
      "/proc/stat" |> File.read!() |> String.split("\n") |> hd() |> String.split()

    [user, nice, system, _idle, _iowait, irq, softirq | _] =
      Enum.map(fields, &String.to_integer/1)

    (user + nice + system + irq + softirq) * @clk_ms
  end

  defp load,
    do: "/proc/loadavg" |> File.read!() |> String.split() |> Enum.take(3) |> Enum.join(" ")
end

Bench.CpuSplit.main(System.argv())
