# Node mode at scale (issue 13): one `ps_port node`, N children (`sleep 600`),
# one owner process each, then every owner gone at once.
#
#     cd elixir_shim && mix run --no-start ../bench/node_scale.exs \
#         [--children 1000] [--cases owners,vm,sigterm] [--smoke]
#
# Cases, each against a fresh node:
#
#   * owners  - the owners are processes of this VM, killed at once
#               (`Process.exit(pid, :kill)` for each)
#   * vm      - the owners live in a second VM (a `:peer`), which is
#               SIGKILLed: the node sees the connection go
#   * sigterm - the owners stay; the node gets SIGTERM
#
# Reported per case: the node's idle RSS, RSS per child once all are open,
# the time from the kill to the last child gone (ms), and the node's RSS peak
# above idle while they went (sampled every 5 ms). bench.exs runs it as the
# scenario `node_scale` (Bench.NodeScale.run/2); this file also runs alone.

# The owners' VM of the case vm and running?/1, shared with the test of
# the same cases.
Code.require_file("../test/elixir/support/node_scale.exs", __DIR__)

defmodule Bench.NodeScale do
  @moduledoc false

  @cases ~w(owners vm sigterm)a

  def cases, do: @cases

  @doc "Runs `cases` with `children` children each; returns a list of figure maps."
  def run(ps_port, children, cases \\ @cases) do
    for c <- cases, do: Map.put(one(c, ps_port, children), :case, c)
  end

  @labels %{
    owners: "every owner killed (`Process.exit(owner, :kill)`)",
    vm: "the owners' VM SIGKILLed (connection lost)",
    sigterm: "SIGTERM to the node (owners alive)"
  }

  @doc "The results of run/3 as a markdown section for docs/benchmarks.md."
  def markdown(results) do
    rows =
      Enum.map_join(results, "\n", fn r ->
        "| #{@labels[r.case]} | #{r.children} | #{r.idle_rss_kib} | " <>
          "#{Float.round(r.rss_per_child_kib, 1)} | #{round(r.empty_ms)} | " <>
          "#{Float.round(r.peak_over_idle_mib, 1)} |"
      end)

    """

    ### Node mode at scale (bench/node_scale.exs)

    One `ps_port node`, started fresh for each case, #{hd(results).children} children
    (`sleep 600`), one owner process each, opened through the node's own
    `{:open, ...}` call; then every owner gone at once. "All gone" is the time
    from the kill (or the SIGTERM) until the last child has left `/proc`; the
    RSS peak is the node's, sampled every 5 ms, above its idle figure. Goals
    (issue 13): all gone ≤ 1 000 ms (SIGTERM: ≤ 2 000 ms, node included),
    peak ≤ idle + 64 MiB, ≤ 128 KiB per idle child.

    | case | children | node RSS idle (KiB) | KiB per child | all gone after (ms) | RSS peak over idle (MiB) |
    |---|---|---|---|---|---|
    #{rows}
    """
  end

  defp one(kind, ps_port, count) do
    # PS_SCALE_PPROF=HOST:PORT: the node serves Go profiles there.
    env =
      case System.get_env("PS_SCALE_PPROF") do
        nil -> []
        addr -> [{~c"PS_PORT_PPROF", String.to_charlist(addr)}]
      end

    inst = Bench.Node.start_extra!(ps_port, env)

    try do
      Process.sleep(1_000)
      idle = rss_kib(inst.os_pid)
      {owners, os_pids, peer} = open_all(kind, inst.name, count)
      # PS_SCALE_HOLD_MS: time to look at the node (pprof) before the kill.
      Process.sleep(String.to_integer(System.get_env("PS_SCALE_HOLD_MS", "500")))
      full = rss_kib(inst.os_pid)
      alive0 = Enum.count(os_pids, &alive?/1)
      if alive0 != count, do: raise("#{kind}: #{alive0} of #{count} children alive after open")
      sampler = start_sampler(inst.os_pid)
      t0 = System.monotonic_time(:microsecond)
      kill(kind, owners, peer, inst)
      empty_ms = wait_gone(os_pids, t0, 60_000)
      # RSS may peak a little after the last child went (teardown).
      Process.sleep(300)
      peak = stop_sampler(sampler)

      %{
        children: count,
        idle_rss_kib: idle,
        rss_per_child_kib: (full - idle) / count,
        empty_ms: empty_ms,
        peak_over_idle_mib: (peak - idle) / 1024
      }
    after
      if kind != :sigterm, do: Bench.Node.stop_extra(inst)
    end
  end

  defp open_all(:vm, node, count) do
    {peer, pnode} = ProtonStreamTest.NodeScale.owner_vm!()
    os_pids = ProtonStreamTest.NodeScale.open_sleepers!(pnode, node, count, 30_000)
    {[], os_pids, {peer, ProtonStreamTest.NodeScale.vm_os_pid(pnode)}}
  end

  defp open_all(_kind, node, count) do
    parent = self()

    owners =
      for _ <- 1..count do
        spawn(fn ->
          {:ok, pid} =
            GenServer.call(
              {:proton_stream, node},
              {:open, "sleep", ["600"], %{}, self()},
              30_000
            )

          send(parent, {:opened, self(), GenServer.call(pid, :"$os_pid", 30_000)})
          Process.sleep(:infinity)
        end)
      end

    os_pids =
      for o <- owners do
        receive do
          {:opened, ^o, os_pid} -> os_pid
        after
          60_000 -> raise "open timed out"
        end
      end

    {owners, os_pids, nil}
  end

  defp kill(:owners, owners, _, _), do: Enum.each(owners, &Process.exit(&1, :kill))

  defp kill(:vm, _, {_peer, vm_pid}, _),
    do: System.cmd("kill", ["-KILL", List.to_string(vm_pid)])

  defp kill(:sigterm, _, _, inst), do: Bench.Node.stop_extra(inst)

  defp alive?(os_pid), do: ProtonStreamTest.NodeScale.running?(os_pid)

  defp wait_gone(os_pids, t0, timeout_ms) do
    case Enum.filter(os_pids, &alive?/1) do
      [] ->
        (System.monotonic_time(:microsecond) - t0) / 1000

      left ->
        el = (System.monotonic_time(:microsecond) - t0) / 1000

        if el > timeout_ms,
          do: raise("#{length(left)} children still alive #{round(el)} ms after the kill")

        Process.sleep(5)
        wait_gone(left, t0, timeout_ms)
    end
  end

  defp start_sampler(os_pid) do
    parent = self()
    spawn_link(fn -> sample(os_pid, 0, parent) end)
  end

  defp sample(os_pid, peak, parent) do
    receive do
      {:stop, ^parent} -> send(parent, {:peak, self(), peak})
    after
      5 ->
        rss = rss_kib(os_pid) || 0

        sample(os_pid, max(peak, rss), parent)
    end
  end

  # VmRSS of a process in KiB; nil once it is gone.
  def rss_kib(os_pid) do
    with {:ok, s} <- File.read("/proc/#{os_pid}/status"),
         [_, kb] <- Regex.run(~r/VmRSS:\s+(\d+) kB/, s) do
      String.to_integer(kb)
    else
      _ -> nil
    end
  end

  defp stop_sampler(s) do
    send(s, {:stop, self()})

    receive do
      {:peak, ^s, peak} -> peak
    end
  end
end

# Run alone (not required by bench.exs, which sets :ps_bench_main).
if not Process.get(:ps_bench_main, false) do
  for f <- ~w(impl.exs), do: Code.require_file(f, __DIR__)

  {opts, _, _} =
    OptionParser.parse(System.argv(),
      strict: [children: :integer, cases: :string, smoke: :boolean]
    )

  count = Keyword.get(opts, :children, if(opts[:smoke], do: 20, else: 1000))

  cases =
    case opts[:cases] do
      nil -> Bench.NodeScale.cases()
      s -> s |> String.split(",") |> Enum.map(&String.to_existing_atom/1)
    end

  ps_port = ProtonStream.muontrap_path()
  Bench.Node.start!(ps_port)

  try do
    for r <- Bench.NodeScale.run(ps_port, count, cases) do
      IO.puts(
        "#{r.case}: #{r.children} children, idle RSS #{r.idle_rss_kib} KiB, " <>
          "#{Float.round(r.rss_per_child_kib, 1)} KiB/child, all gone after " <>
          "#{Float.round(r.empty_ms, 1)} ms, RSS peak idle + #{Float.round(r.peak_over_idle_mib, 1)} MiB"
      )
    end
  after
    Bench.Node.stop()
  end
end
