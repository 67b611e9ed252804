defmodule ProtonStreamTest.ReadmeTest do
  # Every example of proton_stream's README, as written. The programs it names
  # (my_program, my_command, spawning_program, ...) are stand-ins on PATH, see
  # test_helper.exs; cgroups are made with cgcreate by the test.
  #
  # Not async: the MyWorker example prints to stderr, which is captured.
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO
  import ProtonStreamTest.Helpers

  defmodule MyWorker do
    use GenServer
    @behaviour ProtonStream

    def start_link(args) do
      ProtonStream.start_link(__MODULE__, "my_command", [], args, [])
    end

    @impl GenServer
    def init(args) do
      {:ok, %{buffer: "", args: args}}
    end

    @impl ProtonStream
    def handle_stdout(data, state) do
      {:noreply, %{state | buffer: state.buffer <> data}}
    end

    @impl ProtonStream
    def handle_stderr(data, state) do
      IO.puts(:stderr, data)
      {:noreply, state}
    end

    @impl ProtonStream
    def handle_exit(reason, state) do
      {:stop, reason, state}
    end
  end

  test "streaming API: cat hello" do
    output =
      capture_io(fn ->
        {:ok, ps} = ProtonStream.open("cat", [])
        # Send data to stdin
        send(ps, {self(), {:command, "hello"}})
        # Receive stdout
        receive do
          {^ps, {:data, data}} -> IO.puts("Got: #{data}")
        end

        # Close when done
        send(ps, {self(), :close})
        assert_receive {^ps, :closed}, 10_000
      end)

    assert output == "Got: hello\n"
  end

  test "bidirectional communication: bc -q" do
    {:ok, ps} = ProtonStream.open("bc", ["-q"])
    send(ps, {self(), {:command, "2 + 2\n"}})

    receive do
      {^ps, {:data, "4\n"}} -> :ok
    after
      2000 + slack_ms() -> flunk("bc did not answer 4")
    end

    send(ps, {self(), {:command, "10 * 10\n"}})

    receive do
      {^ps, {:data, "100\n"}} -> :ok
    after
      2000 + slack_ms() -> flunk("bc did not answer 100")
    end

    send(ps, {self(), :close})
    assert_receive {^ps, :closed}, 10_000
  end

  test "callback module mode: MyWorker in a supervision tree" do
    stderr =
      capture_io(:stderr, fn ->
        children = [
          {MyWorker, [some: :args]}
        ]

        {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)
        [{MyWorker, worker, :worker, [MyWorker]}] = Supervisor.which_children(sup)

        assert wait_until(fn ->
                 :sys.get_state(worker).mod_state.buffer == "my_command started\n"
               end)

        assert :sys.get_state(worker).mod_state.args == [some: :args]

        # Its stdin works too, and the child is the real my_command (a shell running cat).
        send(worker, {self(), {:command, "ping\n"}})
        assert wait_until(fn -> :sys.get_state(worker).mod_state.buffer =~ "ping\n" end)
        os_pid = ProtonStream.os_pid(worker)
        assert os_pid_alive?(os_pid)

        # When the child dies, handle_exit stops the worker and the supervisor restarts it.
        ref = Process.monitor(worker)
        ProtonStream.signal(worker, :sigkill)
        assert_receive {:DOWN, ^ref, :process, ^worker, {:signal, 9}}, 10_000

        assert wait_until(fn ->
                 match?(
                   [{MyWorker, pid, :worker, _}] when is_pid(pid) and pid != worker,
                   Supervisor.which_children(sup)
                 )
               end)

        [{MyWorker, worker2, :worker, _}] = Supervisor.which_children(sup)
        new_os_pid = ProtonStream.os_pid(worker2)
        assert new_os_pid != os_pid

        assert wait_until(fn ->
                 :sys.get_state(worker2).mod_state.buffer == "my_command started\n"
               end)

        Supervisor.stop(sup)
        refute Process.alive?(worker2)
        assert wait_until(fn -> not os_pid_alive?(new_os_pid) end, 1000)
      end)

    assert stderr =~ "my_command warning\n"
  end

  test "FAQ: watch stdout and stderr of my_program" do
    {:ok, ps} = ProtonStream.open("my_program", [])

    output =
      capture_io(fn ->
        for _ <- 1..2 do
          # In a receive loop or GenServer handle_info:
          receive do
            {^ps, {:data, data}} -> IO.write(data)
            {^ps, {:error, data}} -> IO.write(:stdio, "stderr: " <> data)
          after
            2000 + slack_ms() -> flunk("my_program said nothing")
          end
        end
      end)

    assert output =~ "to stdout\n"
    assert output =~ "stderr: to stderr\n"
  end

  test "FAQ: send input to stdin, then stop" do
    {:ok, ps} = ProtonStream.open("cat", [])
    send(ps, {self(), {:command, "hello world\n"}})
    assert_receive {^ps, {:data, "hello world\n"}}, 10_000
    send(ps, {self(), :close})
    assert_receive {^ps, :closed}, 10_000
    refute Process.alive?(ps)
  end

  test "the ping example: an exiting owner takes the program with it" do
    test_pid = self()

    pid =
      spawn(fn ->
        {:ok, ps} = ProtonStream.open("ping", ["-i", "5", "localhost"])
        send(test_pid, {:os_pid, ProtonStream.os_pid(ps)})
        Process.sleep(:infinity)
      end)

    assert_receive {:os_pid, os_pid}, 10_000
    assert wait_until(fn -> os_descendants(os_pid) != [] end)
    tree = [os_pid | os_descendants(os_pid)]
    Process.exit(pid, :oops)
    assert wait_until(fn -> Enum.all?(tree, &(not os_pid_alive?(&1))) end, 600)
  end

  @tag :cgroup
  test "containment with cgroups: spawning_program" do
    mycgroup = create_cgroup!(["memory", "cpu"])

    {:ok, ps} =
      ProtonStream.open("spawning_program", [],
        cgroup_controllers: ["cpu"],
        cgroup_base: mycgroup
      )

    assert_receive {^ps, {:data, "spawned\n"}}, 10_000
    os_pid = ProtonStream.os_pid(ps)
    "/" <> group = cgroup_of(os_pid, "cpu")
    assert String.starts_with?(group, mycgroup <> "/")
    assert wait_until(fn -> length(os_descendants(os_pid)) == 2 end)
    tree = [os_pid | os_descendants(os_pid)]

    for pid <- tree, do: assert(cgroup_of(pid, "cpu") == "/" <> group)

    send(ps, {self(), :close})
    assert_receive {^ps, :closed}, 10_000
    assert wait_until(fn -> Enum.all?(tree, &(not os_pid_alive?(&1))) end, 600)
    assert wait_until(fn -> not File.exists?(cgroup_dir("cpu", group)) end, 1000)
  end

  @tag :cgroup
  test "limit memory: memory_hog is OOM-killed at 256 MiB" do
    mycgroup = create_cgroup!(["memory", "cpu"])
    Process.flag(:trap_exit, true)

    {:ok, ps} =
      ProtonStream.open("memory_hog", [],
        cgroup_controllers: ["memory"],
        cgroup_base: mycgroup,
        cgroup_sets: [{"memory", "memory.limit_in_bytes", "268435456"}]
      )

    os_pid = ProtonStream.os_pid(ps)
    "/" <> group = cgroup_of(os_pid, "memory")

    assert {:ok, "268435456\n"} =
             ProtonStream.Cgroups.cgget("memory", group, "memory.limit_in_bytes")

    {result, log} = ExUnit.CaptureLog.with_log(fn -> collect(ps, 20_000) end)
    assert result.exit == {:signal, 9}
    assert log =~ "OOM"
    refute File.exists?(cgroup_dir("memory", group))
  end

  @tag :cgroup
  test "limit CPU: cpu_hog gets at most half a CPU" do
    mycgroup = create_cgroup!(["memory", "cpu"])

    {:ok, ps} =
      ProtonStream.open("cpu_hog", [],
        cgroup_controllers: ["cpu"],
        cgroup_base: mycgroup,
        cgroup_sets: [
          {"cpu", "cpu.cfs_period_us", "100000"},
          {"cpu", "cpu.cfs_quota_us", "50000"}
        ]
      )

    os_pid = ProtonStream.os_pid(ps)
    "/" <> group = cgroup_of(os_pid, "cpu")
    assert {:ok, "100000\n"} = ProtonStream.Cgroups.cgget("cpu", group, "cpu.cfs_period_us")
    assert {:ok, "50000\n"} = ProtonStream.Cgroups.cgget("cpu", group, "cpu.cfs_quota_us")

    # Over a second of wall time the hog may use at most ~0.5 s of CPU.
    {clk_tck, 0} = System.cmd("getconf", ["CLK_TCK"])
    clk_tck = clk_tck |> String.trim() |> String.to_integer()
    ticks = cpu_ticks(os_pid)
    Process.sleep(1000)
    used = cpu_ticks(os_pid) - ticks
    assert used / clk_tck < 0.7, "cpu_hog used #{used / clk_tck} s of CPU in 1 s"

    # Throttled as soon as it got its half CPU. On a host so loaded that the
    # hog never gets half a CPU in a period (CI machines are shared), the
    # quota is tightened to 1 ms per period, which even a starved hog
    # reaches: either way the kernel must throttle it.
    throttled? = fn ->
      {:ok, stat} = ProtonStream.Cgroups.cgget("cpu", group, "cpu.stat")
      [_, n] = Regex.run(~r/nr_throttled (\d+)/, stat)
      String.to_integer(n) > 0
    end

    assert wait_until(throttled?, 3000) or
             (:ok == ProtonStream.Cgroups.cgset("cpu", group, "cpu.cfs_quota_us", "1000") and
                wait_until(throttled?, 3000))

    send(ps, {self(), :close})
    assert_receive {^ps, :closed}, 10_000
    assert wait_until(fn -> not File.exists?(cgroup_dir("cpu", group)) end, 1000)
  end

  # utime + stime of a process, in clock ticks.
  defp cpu_ticks(pid) do
    [_, rest] = "/proc/#{pid}/stat" |> File.read!() |> String.split(") ", parts: 2)
    fields = String.split(rest, " ")
    String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))
  end
end
