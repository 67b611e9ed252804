defmodule ProtonStreamTest.NodeMode.ScaleTest do
  # Node mode at scale (issue 13): 1 000 children in a ps_port node of the
  # test's own, one owner process each, then every owner gone at once:
  # killed, or their VM (a peer) killed. Asserted with generous deadlines:
  # every child gone, the node's memory back, the node still serving. The
  # timing goals are measured by bench/node_scale.exs.
  #
  # Not async: it takes a node's worth of children.
  use ExUnit.Case, async: false
  @moduletag :node
  @moduletag timeout: 600_000

  @children 1000

  setup do
    {:ok, sup} =
      Supervisor.start_link([{ProtonStream.Node, [allow_any: true, shutdown_timeout: 500]}],
        strategy: :one_for_one
      )

    Process.unlink(sup)
    on_exit(fn -> if Process.alive?(sup), do: Supervisor.stop(sup) end)
    [{ProtonStream.Node, server, :worker, _}] = Supervisor.which_children(sup)
    ps_node = ProtonStream.Node.name(server)
    os_pid = ProtonStream.Node.os_pid(server)
    # The node's memory before any child, once its connection settled.
    Process.sleep(1_000)
    %{ps_node: ps_node, node_pid: os_pid, rss0: rss_kib(os_pid)}
  end

  test "1 000 owners killed at once: every child goes, memory comes back", ctx do
    parent = self()

    owners =
      for _ <- 1..@children do
        spawn(fn ->
          {:ok, ps} = ProtonStream.open("sleep", ["600"], node: ctx.ps_node)
          send(parent, {:opened, self(), ProtonStream.os_pid(ps)})
          Process.sleep(:infinity)
        end)
      end

    pids = for o <- owners, do: receive_opened(o)
    on_exit(fn -> kill_all(pids) end)
    assert Enum.all?(pids, &alive?/1)

    Enum.each(owners, &Process.exit(&1, :kill))
    assert_all_gone(pids)
    assert_memory_back(ctx)
    assert_serves(ctx.ps_node)
  end

  test "the owners' VM killed: every child goes, memory comes back", ctx do
    # Owners are plain processes of the peer (ProtonStreamTest.NodeScale).
    {_peer, peer} = ProtonStreamTest.NodeScale.owner_vm!()
    pids = ProtonStreamTest.NodeScale.open_sleepers!(peer, ctx.ps_node, @children, 60_000)
    on_exit(fn -> kill_all(pids) end)
    assert Enum.all?(pids, &alive?/1)

    vm = ProtonStreamTest.NodeScale.vm_os_pid(peer)
    {_, 0} = System.cmd("kill", ["-KILL", List.to_string(vm)])
    assert_all_gone(pids)
    assert_memory_back(ctx)
    assert_serves(ctx.ps_node)
  end

  defp receive_opened(owner) do
    receive do
      {:opened, ^owner, os_pid} -> os_pid
    after
      120_000 -> flunk("an owner's open did not answer in 120 s")
    end
  end

  defp alive?(os_pid), do: ProtonStreamTest.NodeScale.running?(os_pid)

  defp assert_all_gone(pids, waited \\ 0) do
    case Enum.filter(pids, &alive?/1) do
      [] ->
        :ok

      left when waited > 180_000 ->
        flunk("#{length(left)} of #{length(pids)} children alive 180 s after their owners went")

      left ->
        Process.sleep(20)
        assert_all_gone(left, waited + 20)
    end
  end

  # The node gives a burst's memory back a second, and again five seconds,
  # after the last child ended.
  defp assert_memory_back(ctx, waited \\ 0) do
    rss = rss_kib(ctx.node_pid)

    cond do
      rss <= ctx.rss0 + 16 * 1024 ->
        :ok

      waited > 60_000 ->
        flunk("ps_port node RSS #{rss} KiB 60 s after its children ended, #{ctx.rss0} KiB before")

      true ->
        Process.sleep(200)
        assert_memory_back(ctx, waited + 200)
    end
  end

  defp assert_serves(ps_node) do
    {:ok, ps} = ProtonStream.open("echo", ["still"], node: ps_node)
    assert_receive {^ps, {:data, "still\n"}}, 30_000
  end

  # Cleanup after a failure: what is still alive of the children.
  defp kill_all(pids) do
    for p <- pids, alive?(p), do: System.cmd("kill", ["-KILL", "#{p}"], stderr_to_stdout: true)
  end

  defp rss_kib(os_pid) do
    [_, kb] = Regex.run(~r/VmRSS:\s+(\d+) kB/, File.read!("/proc/#{os_pid}/status"))
    String.to_integer(kb)
  end
end
