# ps_port side by side with the plain Erlang Port (issue 5).
#
#     make bench          # full run, ~5-10 minutes; writes docs/benchmarks.{md,svg}
#     make bench-smoke    # every scenario at tiny sizes (part of make test)
#
# or by hand, from elixir_shim/:
#
#     mix run --no-start ../bench/bench.exs [--smoke] [--rounds N] [--out DIR]
#                                           [--only throughput,round_trip,...]
#
# Every scenario runs a plain `Port.open` of the program (the physical limit),
# ProtonStream's default (the VM's shared ps_port), `isolated: true` (a
# ps_port per program) and ps_port's node mode, interleaved (the order
# rotates every round), and the figures are reported as ratios to the plain
# Port of the same round, so they hold on a noisy shared machine. Any byte
# lost or changed on the way makes the bench fail (exit status 1).

Process.put(:ps_bench_main, true)

for f <- ~w(impl.exs scenarios.exs report.exs node_scale.exs node_flow.exs node_owner.exs),
    do: Code.require_file(f, __DIR__)

defmodule Bench do
  @moduledoc false

  alias Bench.{Impl, Report, Scenarios}

  @scenarios ~w(integrity throughput throughput_1m throughput_stray throughput_8 fan_in
                round_trip spawn_seq spawn_par kill close mass_kill memory memory_1000)a

  @full %{
    rounds: 7,
    tp_bytes: 268_435_456,
    rt_count: 10_000,
    rt_warmup: 200,
    spawn_seq: 500,
    spawn_par: {500, 50},
    kill_samples: 8,
    close_samples: 20,
    mass_kill: 1000,
    mass_rounds: 2,
    mem_children: 200,
    mem_rounds: 3,
    mem_big: 1000,
    mem_big_rounds: 1,
    par: 8,
    fan_in: {200, 1_000_000},
    node_owner: %{at_once: {1000, 400_000}, one_by_one: {200, 2_000_000}, idle: {1000, 5000}},
    owner_rounds: 2,
    integrity_bytes: 8 * 1024 * 1024,
    flow_lines: 2_000_000
  }

  @smoke %{
    rounds: 1,
    tp_bytes: 1_048_576,
    rt_count: 50,
    rt_warmup: 5,
    spawn_seq: 10,
    spawn_par: {10, 5},
    kill_samples: 2,
    close_samples: 2,
    mass_kill: 10,
    mass_rounds: 1,
    mem_children: 5,
    mem_rounds: 1,
    mem_big: 10,
    mem_big_rounds: 1,
    par: 2,
    fan_in: {5, 100_000},
    node_owner: %{at_once: {10, 100_000}, one_by_one: {5, 100_000}, idle: {10, 200}},
    owner_rounds: 1,
    integrity_bytes: 300_000,
    flow_lines: 20_000
  }

  def main(argv) do
    {opts, _, invalid} =
      OptionParser.parse(argv,
        strict: [smoke: :boolean, rounds: :integer, out: :string, only: :string]
      )

    if invalid != [], do: raise(ArgumentError, "unknown arguments #{inspect(invalid)}")
    smoke = Keyword.get(opts, :smoke, false)
    sizes = if smoke, do: @smoke, else: @full
    sizes = Map.put(sizes, :rounds, Keyword.get(opts, :rounds, sizes.rounds))
    root = Path.expand("..", __DIR__)

    out =
      Keyword.get_lazy(opts, :out, fn ->
        if smoke, do: tmp_dir("ps_bench_smoke"), else: Path.join(root, "docs")
      end)

    only =
      case opts[:only] do
        nil -> @scenarios ++ [:node_scale, :node_flow, :node_owner]
        s -> s |> String.split(",") |> Enum.map(&String.to_existing_atom/1)
      end

    # --no-start: mix loads the code only; the shared ps_port's router lives
    # in the application.
    {:ok, _} = Application.ensure_all_started(:proton_stream)
    ps_port = ProtonStream.muontrap_path()
    if not File.regular?(ps_port), do: raise("ps_port is not built at #{ps_port}")
    load_before = load()
    say("ps_port #{ps_port}; #{if smoke, do: "SMOKE run", else: "#{sizes.rounds} rounds"}")
    Bench.Integrity.reset()
    node = Bench.Node.start!(ps_port)
    say("node mode: #{node}, opened through #{node_api()}")

    try do
      samples = run(sizes, only, ps_port)
      rows = Report.summarize(samples)
      info = info(sizes, ps_port, load_before, root)
      # Node mode's flow control (bench/node_flow.exs): its own section.
      flow_md =
        if :node_flow in only,
          do: Bench.NodeFlow.markdown(Bench.NodeFlow.run(node, sizes.flow_lines, sizes.rounds)),
          else: ""

      # Node mode, many children of one owner (bench/node_owner.exs).
      owner_md =
        if :node_owner in only,
          do: Bench.NodeOwner.markdown(Bench.NodeOwner.run(sizes.node_owner, sizes.owner_rounds)),
          else: ""

      # Node mode at scale (bench/node_scale.exs): its own section.
      scale_md =
        if :node_scale in only,
          do: Bench.NodeScale.markdown(Bench.NodeScale.run(ps_port, sizes.mass_kill)),
          else: ""

      md = Report.markdown(rows, info) <> flow_md <> owner_md <> scale_md

      IO.puts("\n" <> md)
      check_integrity!(only)
      write_docs(out, md, Report.svg(rows, info), smoke)
    after
      Bench.Node.stop()
    end
  end

  defp run(sizes, only, ps_port) do
    file = tmp_dir("ps_bench_data") |> Path.join("random.bin")
    File.write!(file, :rand.bytes(sizes.integrity_bytes))
    digest = :erlang.md5(File.read!(file))

    try do
      for round <- 1..sizes.rounds,
          scenario <- @scenarios,
          scenario in only,
          scenario != :memory or round <= sizes.mem_rounds,
          scenario != :memory_1000 or round <= sizes.mem_big_rounds,
          scenario != :mass_kill or round <= sizes.mass_rounds,
          impl <- rotate(Impl.all(), round + :erlang.phash2(scenario, 3)) do
        t0 = System.monotonic_time(:millisecond)
        figures = run_one(scenario, impl, sizes, ps_port, file, digest)
        flush()
        dt = System.monotonic_time(:millisecond) - t0

        say(
          "round #{round} #{scenario} #{Impl.label(impl)}: " <>
            "#{Enum.map_join(figures, ", ", fn {k, v} -> "#{k} #{show(v)}" end)} (#{dt} ms)"
        )

        {round, impl, figures}
      end
    after
      File.rm(file)
    end
  end

  defp run_one(:integrity, impl, s, _, file, digest),
    do: Scenarios.integrity(impl, file, s.integrity_bytes, digest)

  defp run_one(:throughput, impl, s, _, _, _) do
    %{mbps: v} = Scenarios.throughput(impl, s.tp_bytes, [])
    %{tp_default: v}
  end

  defp run_one(:throughput_1m, impl, s, _, _, _) do
    %{mbps: v} = Scenarios.throughput(impl, s.tp_bytes, stdio_window: 1_048_576)
    %{tp_1m: v}
  end

  # An owner that leaves a message it does not want in its mailbox (a
  # trapped exit, a late reply) while it reads the stream.
  defp run_one(:throughput_stray, impl, s, _, _, _) do
    stray = make_ref()
    send(self(), {:stray, stray})
    %{mbps: v} = Scenarios.throughput(impl, s.tp_bytes, [])
    receive do: ({:stray, ^stray} -> :ok)
    %{tp_stray: v}
  end

  defp run_one(:throughput_8, impl, s, _, _, _) do
    %{mbps: v} = Scenarios.throughput_par(impl, s.tp_bytes, s.par)
    %{tp_par: v}
  end

  defp run_one(:fan_in, impl, s, _, _, _) do
    {n, bytes} = s.fan_in
    %{mbps: v} = Scenarios.fan_in(impl, n, bytes)
    %{fan_in: v}
  end

  defp run_one(:round_trip, impl, s, _, _, _),
    do: Scenarios.round_trip(impl, s.rt_count, 100, s.rt_warmup)

  defp run_one(:spawn_seq, impl, s, _, _, _), do: Scenarios.spawn_seq(impl, s.spawn_seq)

  defp run_one(:spawn_par, impl, s, _, _, _) do
    {count, at_once} = s.spawn_par
    Scenarios.spawn_par(impl, count, at_once)
  end

  defp run_one(:kill, impl, s, _, _, _), do: Scenarios.kill(impl, s.kill_samples)

  defp run_one(:close, impl, s, _, _, _), do: Scenarios.close_gone(impl, s.close_samples)

  defp run_one(:mass_kill, impl, s, _, _, _), do: Scenarios.mass_kill(impl, s.mass_kill)

  defp run_one(:memory, impl, s, ps_port, _, _),
    do: Scenarios.memory(impl, s.mem_children, ps_port)

  defp run_one(:memory_1000, impl, s, ps_port, _, _) do
    %{mem_rss: rss, mem_pss: pss, mem_beam: beam} = Scenarios.memory(impl, s.mem_big, ps_port)
    %{mem_rss_big: rss, mem_pss_big: pss, mem_beam_big: beam}
  end

  defp rotate(list, n) do
    k = rem(n, length(list))
    Enum.drop(list, k) ++ Enum.take(list, k)
  end

  # Stray messages (late :closed replies, port messages) must not leak into
  # the next run.
  defp flush do
    receive do
      _ -> flush()
    after
      0 -> :ok
    end
  end

  defp check_integrity!(only) do
    totals = Bench.Integrity.totals()

    moving =
      Enum.any?(
        only,
        &(&1 in [
            :integrity,
            :throughput,
            :throughput_1m,
            :throughput_stray,
            :throughput_8,
            :fan_in,
            :round_trip
          ])
      )

    for impl <- Impl.all(), moving do
      case Map.get(totals, impl) do
        {w, w, runs} when runs > 0 ->
          :ok

        other ->
          raise Bench.IntegrityError,
            message:
              "INTEGRITY FAILURE: #{Impl.label(impl)}: written/delivered/runs #{inspect(other)}"
      end
    end
  end

  ## Output

  @begin "<!-- bench:begin (generated by bench/bench.exs; edit outside these markers) -->"
  @finish "<!-- bench:end -->"

  defp write_docs(out, md, svg, smoke) do
    File.mkdir_p!(out)
    md_path = Path.join(out, "benchmarks.md")
    svg_path = Path.join(out, "benchmarks.svg")
    block = @begin <> "\n\n" <> md <> "\n" <> @finish

    doc =
      case File.read(md_path) do
        {:ok, old} ->
          case String.split(old, [@begin, @finish]) do
            [pre, _old_block, post] -> pre <> block <> post
            _ -> old <> "\n" <> block <> "\n"
          end

        {:error, _} ->
          "# Benchmarks: ps_port beside the plain Erlang Port\n\n" <>
            "![ratios](benchmarks.svg)\n\n" <> block <> "\n"
      end

    File.write!(md_path, doc)
    File.write!(svg_path, svg)

    if smoke do
      # The smoke run checks that the report can be made, then throws it away.
      if not String.contains?(File.read!(md_path), "| scenario |"), do: raise("no table written")
      if not String.starts_with?(svg, "<svg"), do: raise("no SVG written")
      File.rm_rf!(out)
      say("smoke run OK")
    else
      say("wrote #{md_path} and #{svg_path}")
    end
  end

  defp info(sizes, ps_port, load_before, root) do
    {free, _} = System.cmd("free", ["-h"], stderr_to_stdout: true)
    mem = free |> String.split("\n") |> Enum.at(1, "") |> String.split() |> Enum.at(1, "?")
    {kernel, _} = System.cmd("uname", ["-r"])

    go =
      case System.find_executable("go") || find_go() do
        nil ->
          "Go ?"

        go ->
          {v, _} = System.cmd(go, ["version"], stderr_to_stdout: true)
          v |> String.split() |> Enum.at(2, "?") |> String.replace_prefix("go", "Go ")
      end

    cpu =
      case File.read("/proc/cpuinfo") do
        {:ok, s} ->
          case Regex.run(~r/model name\s*:\s*(.+)/, s) do
            [_, m] -> String.trim(m)
            _ -> "?"
          end

        _ ->
          "?"
      end

    _ = root

    %{
      machine:
        "#{:erlang.system_info(:logical_processors)} cores (`nproc`), #{mem} RAM (`free -h`), " <>
          "#{cpu}, Linux #{String.trim(kernel)}",
      versions:
        "Erlang/OTP #{:erlang.system_info(:otp_release)} (erts #{:erlang.system_info(:version)}), " <>
          "Elixir #{System.version()}, #{go}",
      date: DateTime.utc_now() |> DateTime.truncate(:second) |> DateTime.to_string(),
      rounds: sizes.rounds,
      load_before: load_before,
      load_after: load(),
      node_api: node_api(),
      binary_size: "#{Float.round(File.stat!(ps_port).size / 1_048_576, 1)} MiB",
      kill_samples: sizes.kill_samples,
      close_samples: sizes.close_samples,
      integrity: Bench.Integrity.totals(),
      integrity_note:
        "`cat` of a #{div(sizes.integrity_bytes, 1024)} KiB file of random bytes per " <>
          "implementation and round, compared by md5"
    }
  end

  defp node_api do
    if Bench.Node.shim_option?(),
      do: "`ProtonStream.open(cmd, args, node: node)`",
      else: "`GenServer.call({:proton_stream, node}, {:open, cmd, args, opts, self()})`"
  end

  defp find_go do
    if File.exists?("/usr/local/go/bin/go"), do: "/usr/local/go/bin/go"
  end

  defp load do
    case File.read("/proc/loadavg") do
      {:ok, s} -> s |> String.split() |> Enum.take(3) |> Enum.join(" ")
      _ -> "?"
    end
  end

  defp tmp_dir(prefix) do
    dir = Path.join(System.tmp_dir!(), "#{prefix}_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    dir
  end

  defp show(v) when is_float(v), do: Report.fmt(v)
  defp show(l) when is_list(l), do: "[" <> Enum.map_join(l, " ", &show/1) <> "]"
  defp show(v), do: inspect(v)

  def say(msg), do: IO.puts("bench: " <> msg)
end

Bench.main(System.argv())
