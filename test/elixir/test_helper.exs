defmodule ProtonStreamTest.Helpers do
  @moduledoc """
  Helpers shared by the ExUnit suite of the `:proton_stream` shim.

  `setup_bin_dir!/0` (run once below) puts stand-ins for the programs the
  upstream README names (`my_command`, `my_program`, `memory_hog`, `cpu_hog`,
  `spawning_program`, `ping`) in a temporary directory at the front of `PATH`, so the
  README's examples run exactly as written.
  """

  import ExUnit.Assertions

  @programs %{
    "my_command" => """
    #!/bin/sh
    echo "my_command started"
    echo "my_command warning" >&2
    exec cat
    """,
    "my_program" => """
    #!/bin/sh
    echo "to stdout"
    echo "to stderr" >&2
    """,
    # Grows past any sensible memory limit; exec so the hog is the child itself.
    "memory_hog" => """
    #!/bin/sh
    exec perl -e 'my @a; while (1) { push @a, "x" x 1048576 }'
    """,
    "cpu_hog" => """
    #!/bin/sh
    while :; do :; done
    """,
    # The README's background example: a program that ignores stdin (ping is
    # not installed everywhere, so a stand-in with the same trait).
    "ping" => """
    #!/bin/sh
    while :; do
      echo "64 bytes from 127.0.0.1: icmp_seq=0 ttl=64 time=0.032 ms"
      sleep 5
    done
    """,
    "spawning_program" => """
    #!/bin/sh
    sleep 1000 &
    sleep 1000 &
    echo spawned
    wait
    """
  }

  @doc "Writes the stand-in programs and prepends their directory to PATH."
  def setup_bin_dir! do
    dir =
      Path.join(System.tmp_dir!(), "proton_stream_test_bin_#{System.unique_integer([:positive])}")

    File.mkdir_p!(dir)

    for {name, script} <- @programs do
      path = Path.join(dir, name)
      File.write!(path, script)
      File.chmod!(path, 0o755)
    end

    System.put_env("PATH", dir <> ":" <> System.get_env("PATH", "/usr/bin:/bin"))
    dir
  end

  @doc """
  True while `ps` (a local server, or a pid on a ps_port node) is alive.
  `Process.alive?/1` takes local pids only; a remote pid is asked for its
  OS pid, which fails once it is gone. A pid that does not answer in time
  is alive (a gone one fails at once: noproc, nodedown), only slow on a
  loaded machine.
  """
  def ps_alive?(ps) when is_pid(ps) and node(ps) == node(), do: Process.alive?(ps)

  def ps_alive?(ps) do
    GenServer.call(ps, :"$os_pid", 2000)
    true
  catch
    :exit, {:timeout, _} -> true
    :exit, _ -> false
  end

  @doc "True for a pid on a ps_port node (node mode's message-mode `ps`)."
  def remote?(ps), do: is_pid(ps) and node(ps) != node()

  @doc """
  Asserts that `ps` refused a request with `reason` (an atom): port mode
  logs it (`log` is what was captured), node mode tells the owner with
  `{ps, {:error, reason, message}}`.
  """
  def assert_refused(ps, reason, log) do
    assert_received {^ps, {:error, ^reason, message}} when is_binary(message)

    unless remote?(ps) do
      assert log =~ Atom.to_string(reason)
    end
  end

  @doc "Random lower-case hex string of `bytes` bytes."
  def rand_hex(bytes \\ 4), do: Base.encode16(:rand.bytes(bytes), case: :lower)

  @doc """
  True while the OS process exists and is not a zombie (a zombie has exited;
  it only waits to be reaped).
  """
  def os_pid_alive?(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, stat} -> proc_state(stat) not in ["Z", "X"]
      {:error, _} -> false
    end
  end

  defp proc_state(stat) do
    [_, rest] = String.split(stat, ") ", parts: 2)
    binary_part(rest, 0, 1)
  end

  @doc "`path` with every symlink resolved."
  def real_path(path) do
    Enum.reduce(Path.split(path), "/", fn part, dir ->
      candidate = Path.join(dir, part)

      case File.read_link(candidate) do
        {:ok, target} -> real_path(Path.expand(target, dir))
        {:error, _} -> candidate
      end
    end)
  end

  @doc "Parent pid of an OS process, or nil when it is gone."
  def os_ppid(pid) do
    with {:ok, stat} <- File.read("/proc/#{pid}/stat"),
         [_, rest] <- String.split(stat, ") ", parts: 2),
         [_state, ppid | _] <- String.split(rest, " ") do
      String.to_integer(ppid)
    else
      _ -> nil
    end
  end

  @doc "Every live descendant of OS process `pid`."
  def os_descendants(pid) do
    table =
      for entry <- File.ls!("/proc"),
          Regex.match?(~r/\A\d+\z/, entry),
          child = String.to_integer(entry),
          ppid = os_ppid(child),
          ppid != nil,
          do: {ppid, child}

    collect_descendants([pid], table, [])
  end

  defp collect_descendants([], _table, acc), do: acc

  defp collect_descendants([pid | rest], table, acc) do
    children = for {^pid, child} <- table, do: child
    collect_descendants(children ++ rest, table, children ++ acc)
  end

  @doc """
  How many ms a timing bound in a test may be late by on a loaded machine
  (CI machines are shared): `PS_TEST_SLACK_MS`, default 5000. Tests check
  that something happens and in which order; how fast is the bench's job.
  """
  def slack_ms, do: String.to_integer(System.get_env("PS_TEST_SLACK_MS", "5000"))

  @doc """
  Polls `fun` every 5 ms until it returns truthy or `timeout` ms (plus
  `slack_ms/0`) passed. Returns as soon as `fun` holds, so the slack costs
  nothing when the condition is met.
  """
  def wait_until(fun, timeout \\ 5_000) do
    deadline = System.monotonic_time(:millisecond) + timeout + slack_ms()
    do_wait_until(fun, deadline)
  end

  defp do_wait_until(fun, deadline) do
    cond do
      fun.() ->
        true

      System.monotonic_time(:millisecond) > deadline ->
        false

      true ->
        Process.sleep(5)
        do_wait_until(fun, deadline)
    end
  end

  @doc """
  Receives everything `ps` sends until its `{:EXIT, ps, reason}` and returns
  `%{stdout: binary, stderr: binary, exit: reason, order: [tag]}`.
  """
  def collect(ps, timeout \\ 10_000) do
    do_collect(ps, timeout, [], [], [])
  end

  defp do_collect(ps, timeout, out, err, order) do
    receive do
      {^ps, {:data, data}} -> do_collect(ps, timeout, [out | data], err, [:data | order])
      {^ps, {:error, data}} -> do_collect(ps, timeout, out, [err | data], [:error | order])
      {:EXIT, ^ps, reason} -> result(out, err, reason, order)
    after
      timeout ->
        flunk(
          "no {:EXIT, ps, _} within #{timeout} ms; got so far: #{inspect(result(out, err, :timeout, order))}"
        )
    end
  end

  defp result(out, err, reason, order) do
    %{
      stdout: IO.iodata_to_binary(out),
      stderr: IO.iodata_to_binary(err),
      exit: reason,
      order: Enum.reverse(order)
    }
  end

  @doc "Runs `command` in message mode and collects everything (see `collect/2`)."
  def run(command, args, opts \\ [], timeout \\ 10_000) do
    {:ok, ps} = ProtonStream.open(command, args, opts)
    collect(ps, timeout)
  end

  @doc """
  Payload bytes of `{ps, {:data, _}}` messages waiting in `pid`'s mailbox.

  Asked from another process: a process asking about itself does not see
  messages that arrived while it slept and are not yet in its queue (they
  are moved there when it next looks for a message); asked from outside,
  every message that arrived before the question is counted.
  """
  def mailbox_bytes(pid, ps) do
    {:messages, messages} = Task.await(Task.async(fn -> Process.info(pid, :messages) end))
    Enum.sum(for {^ps, {:data, data}} <- messages, do: byte_size(data))
  end

  @doc "The cgroup of OS process `pid` for `controller` (as in /proc/PID/cgroup)."
  def cgroup_of(pid, controller) do
    "/proc/#{pid}/cgroup"
    |> File.read!()
    |> String.split("\n", trim: true)
    |> Enum.find_value(fn line ->
      [_id, controllers, path] = String.split(line, ":", parts: 3)
      if controller in String.split(controllers, ","), do: path
    end)
  end

  @doc """
  Creates a cgroup `proton_stream_test_<random>` for `controllers` with
  `cgcreate` and removes it (with any group left inside) when the test exits.
  Returns the name, to be used in cgroup options.

  `prefix` is where cgroup options point: `""` in port mode, the node's
  `--cgroup-base` plus `/` in node mode (see `ProtonStreamTest.Mode`); the
  group is made there.

  The removal is an rmdir per directory: `cgdelete -g memory,cpu:NAME` leaves
  the cpu group behind on this kind of hybrid host.
  """
  def create_cgroup!(controllers, prefix \\ "") do
    name = "proton_stream_test_" <> rand_hex()
    path = prefix <> name
    spec = Enum.join(controllers, ",") <> ":" <> path
    {out, status} = System.cmd("cgcreate", ["-g", spec], stderr_to_stdout: true)
    assert status == 0, "cgcreate -g #{spec} failed: #{out}"

    # ps_port also makes NAME in the controller-less v2 tree of a hybrid host
    # (/sys/fs/cgroup/unified), and may leave it there when two groups under
    # NAME overlap.
    # ps_port may still be removing a program's group inside it.
    ExUnit.Callbacks.on_exit(fn ->
      wait_until(fn ->
        remove_cgroup!(controllers, path)
        not Enum.any?(controllers, &File.exists?(cgroup_dir(&1, path)))
      end)
    end)

    name
  end

  @doc "Removes cgroup `path` (and any group inside) from every hierarchy."
  def remove_cgroup!(controllers, path) do
    for controller <- ["unified" | controllers],
        do: remove_cgroup_dir(cgroup_dir(controller, path))
  end

  defp remove_cgroup_dir(dir) do
    case File.ls(dir) do
      {:ok, entries} ->
        for entry <- entries,
            File.dir?(Path.join(dir, entry)),
            do: remove_cgroup_dir(Path.join(dir, entry))

        File.rmdir(dir)

      {:error, _} ->
        :ok
    end
  end

  @doc "The directory of cgroup `path` under v1 `controller`."
  def cgroup_dir(controller, path), do: Path.join(["/sys/fs/cgroup", controller, path])
end

defmodule ProtonStreamTest.Mode do
  @moduledoc """
  The three ways the shared behaviour tests (test/elixir/support/) run:
  `:shared` (the default: the VM's shared `ps_port --shared`), `:isolated`
  (`isolated: true`, a `ps_port --packet` per program) and `:node` (programs
  on the suite's ps_port node, started below with `ProtonStream.Node`).

  `context/1` is each test's context: `m`, the options that select the mode
  (appended to every open/start_link), and `cg`, the prefix of a cgroup
  option's path in the cgroup tree (the node's `--cgroup-base` plus `/`).
  """

  @doc "The suite's ps_port node (started by start_node!/0)."
  def node_name, do: :persistent_term.get({__MODULE__, :node})

  def context(:shared), do: %{m: [], cg: "", mode: :shared}
  def context(:isolated), do: %{m: [isolated: true], cg: "", mode: :isolated}

  def context(:node) do
    %{
      m: [node: node_name()],
      cg: :persistent_term.get({__MODULE__, :cgroup_prefix}),
      mode: :node
    }
  end

  @doc """
  Makes this VM a distributed node (epmd first) and starts the suite's ps_port
  node under a supervisor of its own, with a cgroup base when cgroups can be
  made here. Port mode does not care that the VM is distributed.
  """
  def start_node! do
    {_, 0} = System.cmd("epmd", ["-daemon"])
    rand = ProtonStreamTest.Helpers.rand_hex()
    {:ok, _} = Node.start(:"proton_stream_test_#{rand}@127.0.0.1", :longnames)

    base = cgroup_base()

    # nobody: the option cases run programs as uid 65534 (docs/node.md,
    # "Security model": a node runs them only as users it allows).
    opts =
      [allow_any: true, allow_uid: ["nobody"], shutdown_timeout: 1000] ++
        if(base, do: [cgroup_base: base], else: [])

    {:ok, sup} = Supervisor.start_link([{ProtonStream.Node, opts}], strategy: :one_for_one)
    Process.unlink(sup)
    [{_, node_server, _, _}] = Supervisor.which_children(sup)
    :persistent_term.put({__MODULE__, :node}, ProtonStream.Node.name(node_server))
    :persistent_term.put({__MODULE__, :cgroup_prefix}, if(base, do: base <> "/", else: ""))

    # A lost connection to a ps_port node is worth a line in the output.
    spawn(fn ->
      :net_kernel.monitor_nodes(true, node_type: :all, nodedown_reason: true)
      log_nodedowns()
    end)

    ExUnit.after_suite(fn _ ->
      Supervisor.stop(sup)

      if base,
        do: ProtonStreamTest.Helpers.remove_cgroup!(["memory", "cpu", "cpuacct", "pids"], base)
    end)
  end

  defp log_nodedowns do
    receive do
      {:nodedown, node, info} ->
        IO.puts(:stderr, "test VM: connection to #{node} lost: #{inspect(info)}")

      _ ->
        :ok
    end

    log_nodedowns()
  end

  defp cgroup_base do
    name = "proton_stream_test_node_" <> ProtonStreamTest.Helpers.rand_hex()

    with path when is_binary(path) <- System.find_executable("cgcreate"),
         {_, 0} <- System.cmd(path, ["-g", "memory,cpu:" <> name], stderr_to_stdout: true) do
      name
    else
      _ -> nil
    end
  end
end

# Lines from ergo under the suite's node are logged at :debug.
Logger.configure(level: :info)

for file <- Path.wildcard(Path.join(__DIR__, "support/*.exs")), do: Code.require_file(file)

ProtonStreamTest.Helpers.setup_bin_dir!()
# Set before the suite's ps_port node starts, so that it inherits it too (the
# :env test checks inheritance).
System.put_env("PROTON_STREAM_TEST_INHERITED", "inherited")

# Node mode tests (tag :node) run on the suite's ps_port node; exclude them
# with `mix test --exclude node`.
ProtonStreamTest.Mode.start_node!()

# A bare `assert_receive pattern` waits ExUnit's default 100 ms: far too
# short on a loaded CI machine for something that must come. It waits
# slack_ms/0 instead (a refute_receive keeps its short default: a late
# message cannot fail it falsely).
ExUnit.start(capture_log: true, assert_receive_timeout: ProtonStreamTest.Helpers.slack_ms())
