defmodule ProtonStreamTest.NodeMode.NodeTest do
  # What only node mode has: ps is the node's pid, ProtonStream.Node under a
  # supervisor (restarts, stop, cookie), flow control of the owner's
  # mailbox, a lost node, and the node's refusals.
  #
  # Not async: some tests kill a ps_port node and watch for the result.
  use ExUnit.Case, async: false
  @moduletag :node

  import ExUnit.CaptureLog
  import ProtonStreamTest.Helpers

  setup do
    Process.flag(:trap_exit, true)
    ProtonStreamTest.Mode.context(:node)
  end

  # A ps_port node of the test's own, under a supervisor of the test's own.
  defp start_node(opts \\ [allow_any: true]) do
    {:ok, sup} =
      Supervisor.start_link([{ProtonStream.Node, [shutdown_timeout: 500] ++ opts}],
        strategy: :one_for_one
      )

    # Not linked: the test stops it (a test that kills things must not take
    # its supervisor down with it).
    Process.unlink(sup)
    on_exit(fn -> if Process.alive?(sup), do: Supervisor.stop(sup) end)
    {sup, node_server(sup)}
  end

  defp node_server(sup) do
    [{ProtonStream.Node, server, :worker, _}] = Supervisor.which_children(sup)
    server
  end

  describe "message mode" do
    test "ps is the program's pid on the node; the owner is not linked to it", %{m: m} do
      {:ok, ps} = ProtonStream.open("cat", [], m)
      assert node(ps) == ProtonStreamTest.Mode.node_name()
      assert {:links, []} = Process.info(self(), :links)
      ProtonStream.close(ps)
      assert_receive {^ps, :closed}, 10_000
      assert_receive {:EXIT, ^ps, :normal}, 10_000
    end

    test "flow: :queue_len (the default) bounds the owner's mailbox by the window", %{m: m} do
      window = 65_536
      script = "head -c 10000000 /dev/zero; exec sleep 10"
      {:ok, ps} = ProtonStream.open("sh", ["-c", script], [stdio_window: window] ++ m)

      # We do not read for a while: the node stops once a window is out.
      assert wait_until(fn -> mailbox_bytes(self(), ps) > 0 end)
      waiting = settled_mailbox_bytes(ps, window)
      assert waiting > 0 and waiting <= window

      assert receive_bytes(ps, 0, 10_000_000, false) == 10_000_000
      ProtonStream.close(ps)
    end

    test "flow: :queue_len with a message the owner leaves in its mailbox: bounded, and the stream goes on",
         %{m: m} do
      # queue_len counts the stray message too; ps_port then counts its own
      # messages in the queue (on this node) instead of stalling.
      stray = make_ref()
      send(self(), {:stray, stray})
      window = 65_536
      script = "head -c 10000000 /dev/zero; exec sleep 10"
      {:ok, ps} = ProtonStream.open("sh", ["-c", script], [stdio_window: window] ++ m)

      assert wait_until(fn -> mailbox_bytes(self(), ps) > 0 end)
      waiting = settled_mailbox_bytes(ps, window)
      assert waiting > 0 and waiting <= window, "#{waiting} bytes wait"

      assert receive_bytes(ps, 0, 10_000_000, false) == 10_000_000
      assert_received {:stray, ^stray}
      ProtonStream.close(ps)
    end

    @tag timeout: 180_000
    test "1 000 children streaming to one owner: every byte, the owner's memory bounded by their windows",
         %{m: m} do
      # Each child's queue_len poll sees the others' messages: ps_port
      # counts them on this node, once per round for all of an owner's
      # children (counted per child, this ran the node out of memory).
      {n, bytes, window} = {1000, 100_000, 65_536}
      base = :erlang.memory(:total)
      sampler = Task.async(fn -> peak_memory(base) end)

      children =
        for _ <- 1..n do
          {:ok, ps} =
            ProtonStream.open(
              "head",
              ["-c", "#{bytes}", "/dev/zero"],
              [stdio_window: window] ++ m
            )

          ps
        end

      got = receive_all(Map.new(children, &{&1, 0}), n)
      send(sampler.pid, :stop)
      peak = Task.await(sampler)

      assert Enum.all?(children, &(Map.fetch!(got, &1) == bytes))
      # The windows allow n * window bytes in the mailbox (64 MiB); a count
      # that copied the queue per child went far past that.
      assert peak - base <= n * window + 128 * 1_048_576,
             "the VM grew by #{div(peak - base, 1_048_576)} MiB"
    end

    test "flow: :queue_len goes on when the owner holds 20 000 messages it does not take", %{m: m} do
      for i <- 1..20_000, do: send(self(), {:stray, i})
      {:ok, ps} = ProtonStream.open("head", ["-c", "2000000", "/dev/zero"], m)
      assert receive_bytes(ps, 0, 2_000_000, false) == 2_000_000
      for i <- 1..20_000, do: assert_received({:stray, ^i})
    end

    test "flow: :ack lets through what the owner acknowledged with ack/2", %{m: m} do
      window = 65_536
      script = "head -c 10000000 /dev/zero; exec sleep 10"

      {:ok, ps} = ProtonStream.open("sh", ["-c", script], [stdio_window: window, flow: :ack] ++ m)

      assert wait_until(fn -> mailbox_bytes(self(), ps) > 0 end)
      waiting = settled_mailbox_bytes(ps, window)
      assert waiting > 0 and waiting <= window, "#{waiting} bytes wait"
      assert receive_bytes(ps, 0, 10_000_000, true) == 10_000_000
      ProtonStream.close(ps)
    end

    # A regression guard, not a reproducer: ergo alone lost such a link
    # rarely (the child ending between its check and its add), and then the
    # linker waited forever (node/route.go, directRouter.RouteLink).
    test "a process that links to a child exiting at once gets its exit signal", %{m: m} do
      test_pid = self()

      for _ <- 1..200 do
        {:ok, ps} = ProtonStream.open("true", [], m)

        spawn(fn ->
          Process.flag(:trap_exit, true)
          Process.link(ps)

          receive do
            {:EXIT, ^ps, reason} -> send(test_pid, {:link_exit, ps, reason})
          end
        end)

        assert_receive {:link_exit, ^ps, reason}, 10_000
        assert reason in [:normal, :noproc]
        assert_receive {:EXIT, ^ps, _}, 10_000
      end
    end

    test "ack/2 does nothing for a local server" do
      {:ok, ps} = ProtonStream.open("cat", [])
      assert ProtonStream.ack(ps, 10) == :ok
      ProtonStream.command(ps, "x")
      assert_receive {^ps, {:data, "x"}}, 10_000
      ProtonStream.close(ps)
    end

    test "the program does not see the cookie", %{m: m} do
      assert %{stdout: "unset\n"} = run("sh", ["-c", "echo ${PS_PORT_COOKIE-unset}"], m)
    end
  end

  describe "ProtonStream.Node" do
    test "under a Supervisor: name/1, programs, and a stop that ends every program" do
      {sup, server} = start_node()
      ps_node = ProtonStream.Node.name(server)
      assert ps_node in Node.list()
      node_os_pid = ProtonStream.Node.os_pid(server)
      assert File.read!("/proc/#{node_os_pid}/comm") == "ps_port_node\n"

      {:ok, ps} = ProtonStream.open("sh", ["-c", "echo ready; exec sleep 1000"], node: ps_node)
      assert_receive {^ps, {:data, "ready\n"}}, 10_000
      os_pid = ProtonStream.os_pid(ps)
      assert os_ppid(os_pid) == node_os_pid

      Supervisor.stop(sup)
      # The owner gets the exit; the program and the node are gone.
      assert_receive {:EXIT, ^ps, {:signal, 15}}, 10_000
      refute os_pid_alive?(os_pid)
      assert wait_until(fn -> not os_pid_alive?(node_os_pid) end, 1000)
      refute ps_node in Node.list()
    end

    test "a node that dies is restarted under its name; its owners learn of it" do
      {sup, server} = start_node()
      ps_node = ProtonStream.Node.name(server)
      node_os_pid = ProtonStream.Node.os_pid(server)
      test_pid = self()

      # Message mode, ownership handed over with connect/2 ...
      {:ok, ps} = ProtonStream.open("sleep", ["1000"], node: ps_node)
      os_pid = ProtonStream.os_pid(ps)

      new_owner =
        spawn_link(fn ->
          receive do
            msg -> send(test_pid, {:new_owner_got, msg})
          end
        end)

      ProtonStream.connect(ps, new_owner)
      assert_receive {^ps, :connected}, 10_000
      # ... and callback mode.
      {:ok, worker} =
        ProtonStream.start_link(ProtonStreamTest.Cases.Callback.Bare, "sleep", ["1000"], [],
          node: ps_node
        )

      worker_os_pid = ProtonStream.os_pid(worker)

      capture_log(fn ->
        System.cmd("kill", ["-KILL", Integer.to_string(node_os_pid)])

        assert_receive {:new_owner_got, {:EXIT, ^ps, {:ps_port_exited, :noconnection}}}, 10_000
        assert_receive {:EXIT, ^worker, {:ps_port_exited, :noconnection}}, 10_000
        refute_received {:EXIT, ^ps, _}

        # The programs die with their node (parent-death signal).
        assert wait_until(fn -> not os_pid_alive?(os_pid) end, 1000)
        assert wait_until(fn -> not os_pid_alive?(worker_os_pid) end, 1000)

        # The supervisor started the node again, under the same name.
        assert wait_until(fn -> node_server(sup) not in [server, :restarting, :undefined] end)
        server2 = node_server(sup)
        assert ProtonStream.Node.name(server2) == ps_node
        assert ProtonStream.Node.os_pid(server2) != node_os_pid
      end)

      assert %{stdout: "again\n", exit: :normal} = run("echo", ["again"], node: ps_node)
    end

    test "a port closed without a stop (the server killed) ends the node and its programs" do
      test_pid = self()

      # Not under a supervisor, which would start the node again: a holder
      # process owns the server (and so the port).
      spawn(fn ->
        {:ok, server} = ProtonStream.Node.start_link(allow_any: true, shutdown_timeout: 500)
        send(test_pid, {:server, server})
        Process.sleep(:infinity)
      end)

      assert_receive {:server, server}, 15_000
      ps_node = ProtonStream.Node.name(server)
      node_os_pid = ProtonStream.Node.os_pid(server)
      {:ok, ps} = ProtonStream.open("sh", ["-c", "echo ready; exec sleep 1000"], node: ps_node)
      assert_receive {^ps, {:data, "ready\n"}}, 10_000
      os_pid = ProtonStream.os_pid(ps)

      # :kill skips terminate/2 (no SIGTERM): ps_port only sees the end of
      # its stdin, as when this VM dies.
      Process.exit(server, :kill)

      assert_receive {:EXIT, ^ps, {:signal, 15}}, 10_000
      refute os_pid_alive?(os_pid)
      assert wait_until(fn -> not os_pid_alive?(node_os_pid) end, 5000)
      assert wait_until(fn -> ps_node not in Node.list() end, 2000)
    end

    test "the cookie is not on the ps_port node's command line" do
      {_sup, server} = start_node()
      cookie = Atom.to_string(Node.get_cookie())
      node_os_pid = ProtonStream.Node.os_pid(server)

      {ps_args, 0} = System.cmd("ps", ["-eo", "pid,args"])
      [line] = for l <- String.split(ps_args, "\n"), String.trim(l) =~ ~r/^#{node_os_pid} /, do: l
      assert line =~ "ps_port_node --name"
      refute ps_args =~ cookie
      refute File.read!("/proc/#{node_os_pid}/cmdline") =~ cookie
    end

    test "which programs the node allows, and how many" do
      {_sup, server} = start_node(allow: ["/usr/bin/tru*", "/usr/bin/sleep"], max_children: 1)
      ps_node = ProtonStream.Node.name(server)

      assert {:error, {:spawn_error, :not_allowed, message}} =
               ProtonStream.open("echo", ["x"], node: ps_node)

      assert message =~ "/usr/bin/echo"

      {:ok, ps} = ProtonStream.open("sleep", ["1000"], node: ps_node)

      assert {:error, {:spawn_error, :too_many_children, _}} =
               ProtonStream.open("true", [], node: ps_node)

      ProtonStream.close(ps)
      assert_receive {:EXIT, ^ps, :normal}, 10_000
      assert %{exit: :normal} = run("true", [], node: ps_node)
    end

    test "allow_env:, allow_uid:, allow_gid: and max_request: reach the node" do
      {_sup, server} = start_node(allow_any: true)
      ps_node = ProtonStream.Node.name(server)
      preload = [env: [{"LD_PRELOAD", "/nonexistent/x.so"}], node: ps_node]

      assert {:error, {:spawn_error, :badarg, message}} =
               ProtonStream.open("echo", ["hi"], preload)

      assert message =~ "LD_PRELOAD" and message =~ "--allow-env"

      assert {:error, {:spawn_error, :badarg, message}} =
               ProtonStream.open("id", [], uid: "nobody", node: ps_node)

      assert message =~ "--allow-uid"

      {_sup, server} =
        start_node(
          allow_any: true,
          allow_env: ["LD_*"],
          allow_uid: ["nobody", 54_321],
          allow_gid: [54_321],
          max_request: 1_000_000
        )

      ps_node = ProtonStream.Node.name(server)
      preload = Keyword.put(preload, :node, ps_node)
      assert %{stdout: "hi\n", stderr: stderr} = run("echo", ["hi"], preload)
      assert stderr =~ "ld.so"

      if System.get_env("USER") == "root" or :os.cmd(~c"id -u") == ~c"0\n" do
        assert %{stdout: "54321 54321\n"} =
                 run("sh", ["-c", "echo $(id -u) $(id -g)"],
                   uid: 54_321,
                   gid: 54_321,
                   node: ps_node
                 )
      end

      assert {:error, {:spawn_error, :too_large, message}} =
               ProtonStream.open("echo", List.duplicate(String.duplicate("a", 100_000), 12),
                 node: ps_node
               )

      assert message =~ "--max-request 1000000"
    end

    test "cgroup options need the node's :cgroup_base" do
      {_sup, server} = start_node()

      assert {:error, {:spawn_error, :badarg, message}} =
               ProtonStream.open("true", [],
                 node: ProtonStream.Node.name(server),
                 cgroup_controllers: ["cpu"],
                 cgroup_path: "x"
               )

      assert message =~ "cgroup-base"
    end

    test "a name in use: the error carries ps_port's output" do
      name = ProtonStreamTest.Mode.node_name()

      assert {:error, {:ps_port_exited, status, output}} =
               ProtonStream.Node.start_link(name: name, allow_any: true)

      assert status != 0
      assert output =~ "ps_port node"
    end

    test "options are checked in the caller" do
      assert_raise ArgumentError, ~r/allow_any: true/, fn -> ProtonStream.Node.start_link([]) end

      assert_raise ArgumentError, ~r/exclude each other/, fn ->
        ProtonStream.Node.start_link(allow: ["/bin/*"], allow_any: true)
      end

      assert_raise ArgumentError, ~r/:allow/, fn ->
        ProtonStream.Node.start_link(allow: ["bin"])
      end

      for {key, bad} <- [
            allow_env: "LD_*",
            allow_env: ["A=B"],
            allow_uid: [-1],
            allow_gid: [:root],
            max_request: 10
          ] do
        assert_raise ArgumentError, ~r/#{key}/, fn ->
          ProtonStream.Node.start_link([{:allow_any, true}, {key, bad}])
        end
      end

      assert_raise ArgumentError, ~r/unknown ProtonStream.Node option :cookie/, fn ->
        ProtonStream.Node.start_link(allow_any: true, cookie: :secret)
      end
    end

    test "a VM that is not distributed: a clear error, or start_distribution: true" do
      ebin = Path.join(Application.app_dir(:proton_stream), "ebin")

      script = ~S"""
      Process.flag(:trap_exit, true)
      {:ok, _} = Application.ensure_all_started(:proton_stream)
      {:error, {:not_distributed, message}} = ProtonStream.Node.start_link(allow_any: true)
      IO.puts("not distributed: " <> message)

      {:error, {:spawn_error, :not_distributed, _}} =
        ProtonStream.open("echo", [], node: :"ps@127.0.0.1")

      {:ok, n} = ProtonStream.Node.start_link(allow_any: true, start_distribution: true)
      {:ok, ps} = ProtonStream.open("echo", ["hi"], node: ProtonStream.Node.name(n))

      receive do
        {^ps, {:data, data}} -> IO.write("#{node()} got " <> data)
      end

      GenServer.stop(n)
      """

      {out, status} = System.cmd("elixir", ["-pa", ebin, "-e", script], stderr_to_stdout: true)
      assert status == 0, out
      assert out =~ "not distributed: this VM is not distributed"
      assert out =~ "start_distribution: true"
      assert out =~ ~r/proton_stream_[0-9a-f]{8}@127.0.0.1 got hi\n/
    end
  end

  describe "node errors" do
    test "a node that is not there: {:error, {:spawn_error, :nodedown, _}}" do
      assert {:error, {:spawn_error, :nodedown, message}} =
               ProtonStream.open("true", [], node: :"nobody_here@127.0.0.1")

      assert message =~ "nobody_here@127.0.0.1"
    end

    test "a node lost while an open waits, after opens over the same connection: :nodedown" do
      {_sup, server} = start_node()
      ps_node = ProtonStream.Node.name(server)
      node_os_pid = ProtonStream.Node.os_pid(server)
      assert %{exit: :normal} = run("true", [], node: ps_node)
      # The spawner answered over this connection: later opens over it are
      # calls without a process monitor (ProtonStream.Remote.quick_call/2).
      assert :persistent_term.get({ProtonStream.Remote, :answered, ps_node}, nil) != nil

      capture_log(fn ->
        # A node that takes the request and never answers, then goes.
        System.cmd("kill", ["-STOP", Integer.to_string(node_os_pid)])
        test_pid = self()

        opener =
          spawn(fn -> send(test_pid, {:opened, ProtonStream.open("true", [], node: ps_node)}) end)

        assert wait_until(fn ->
                 Process.info(opener, :current_function) ==
                   {:current_function, {ProtonStream.Remote, :quick_call, 2}}
               end)

        System.cmd("kill", ["-KILL", Integer.to_string(node_os_pid)])
        assert_receive {:opened, {:error, {:spawn_error, :nodedown, message}}}, 10_000
        assert message =~ Atom.to_string(ps_node)
      end)
    end

    test "a node that is no ps_port node: {:error, {:spawn_error, :noproc, _}}" do
      assert {:error, {:spawn_error, :noproc, _}} = ProtonStream.open("true", [], node: node())
    end

    test "a missing cd and a missing program are both :enoent; the message says which", %{
      m: m
    } do
      assert {:error, {:spawn_error, :enoent, message}} =
               ProtonStream.open("true", [], [cd: "/no/such/dir"] ++ m)

      assert message =~ ~s|working directory (cd) "/no/such/dir": no such file or directory|
      assert message =~ ~s("true" was not started)

      # Start and callback mode say the same.
      assert {:error, {:spawn_error, :enoent, ^message}} =
               ProtonStream.start_link(
                 ProtonStreamTest.Cases.Callback.Bare,
                 "true",
                 [],
                 [],
                 [cd: "/no/such/dir"] ++ m
               )

      assert {:error, {:spawn_error, :enoent, message}} =
               ProtonStream.open("/no/such/program", [], [cd: "/tmp"] ++ m)

      assert message =~ ~s("/no/such/program")
      refute message =~ "working directory"
    end
  end

  # Receives {ps, {:data, _}} until `total` bytes came, acknowledging each
  # when `ack?`.
  # The bytes from ps waiting in our mailbox once they stopped growing (two
  # looks 200 ms apart agree), every look at most `window`. Polled, not
  # taken after a fixed sleep: on a loaded machine the window may still be
  # on its way after any fixed time.
  defp settled_mailbox_bytes(ps, window) do
    deadline = System.monotonic_time(:millisecond) + 5000 + slack_ms()
    settled_mailbox_bytes(ps, window, mailbox_bytes(self(), ps), deadline)
  end

  defp settled_mailbox_bytes(ps, window, last, deadline) do
    assert last <= window, "#{last} bytes wait for the owner, more than the #{window} byte window"
    Process.sleep(200)

    case mailbox_bytes(self(), ps) do
      ^last ->
        last

      now ->
        if System.monotonic_time(:millisecond) > deadline,
          do: flunk("the owner's mailbox still grows (#{now} bytes): the node does not stop")

        settled_mailbox_bytes(ps, window, now, deadline)
    end
  end

  # Bytes per child until every child of `got` exited.
  defp receive_all(got, 0), do: got

  defp receive_all(got, running) do
    receive do
      {ps, {:data, data}} when is_map_key(got, ps) ->
        receive_all(Map.update!(got, ps, &(&1 + byte_size(data))), running)

      {:EXIT, ps, :normal} when is_map_key(got, ps) ->
        receive_all(got, running - 1)
    after
      30_000 + slack_ms() -> flunk("stalled with #{running} children running")
    end
  end

  # The VM's largest memory total, sampled until :stop.
  defp peak_memory(peak) do
    receive do
      :stop -> peak
    after
      20 -> peak_memory(max(peak, :erlang.memory(:total)))
    end
  end

  defp receive_bytes(_ps, bytes, total, _ack?) when bytes >= total, do: bytes

  defp receive_bytes(ps, bytes, total, ack?) do
    receive do
      {^ps, {:data, data}} ->
        if ack?, do: ProtonStream.ack(ps, byte_size(data))
        receive_bytes(ps, bytes + byte_size(data), total, ack?)
    after
      5000 + slack_ms() -> flunk("stalled after #{bytes} bytes")
    end
  end
end
