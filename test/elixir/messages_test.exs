defmodule ProtonStreamTest.MessagesTest do
  # Message mode: every message to and from a ProtonStream process.
  use ExUnit.Case, async: true

  import ProtonStreamTest.Helpers

  setup do
    Process.flag(:trap_exit, true)
    :ok
  end

  describe "open/3" do
    test "returns a process linked to the caller, running the real program" do
      {:ok, ps} = ProtonStream.open("cat", [])
      assert ps in elem(Process.info(self(), :links), 1)

      os_pid = ProtonStream.os_pid(ps)
      assert File.read!("/proc/#{os_pid}/comm") == "cat\n"
      assert os_pid_alive?(os_pid)
      ProtonStream.close(ps)
      assert_receive {^ps, :closed}, 1000
    end

    test "args reach the program unchanged" do
      args = ["a b", "", "-n", "ünïcode", "$HOME", "*"]

      assert run("sh", ["-c", ~S(for a in "$@"; do printf '[%s]' "$a"; done), "sh" | args]).stdout ==
               Enum.map_join(args, &"[#{&1}]")
    end

    test "an absolute path works as command" do
      assert %{stdout: "hi\n", exit: :normal} = run("/bin/echo", ["hi"])
    end
  end

  describe "to the owner" do
    test "{ps, {:data, bin}} carries stdout" do
      assert %{stdout: "hello\n", stderr: "", exit: :normal} = run("echo", ["hello"])
    end

    test "{ps, {:error, bin}} carries stderr" do
      assert %{stdout: "", stderr: "oops\n", exit: :normal} = run("sh", ["-c", "echo oops >&2"])
    end

    test "stdout and stderr each keep their order" do
      script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done"
      result = run("sh", ["-c", script])
      assert result.stdout == "out1\nout2\nout3\nout4\nout5\n"
      assert result.stderr == "err1\nerr2\nerr3\nerr4\nerr5\n"
    end

    test "{:EXIT, ps, reason} comes after all output, once, as a message" do
      {:ok, ps} = ProtonStream.open("sh", ["-c", "echo last words; exit 3"])
      assert_receive {^ps, {:data, "last words\n"}}, 2000
      assert_receive {:EXIT, ^ps, {:exit_status, 3}}, 2000
      refute Process.alive?(ps)
      refute_receive {:EXIT, ^ps, _}, 100
    end

    test "an owner that does not trap exits is not killed by a failing program" do
      test_pid = self()

      owner =
        spawn(fn ->
          {:ok, ps} = ProtonStream.open("false", [])

          receive do
            {:EXIT, ^ps, reason} -> send(test_pid, {:owner_got, reason})
          end

          send(test_pid, {:owner_alive, Process.alive?(self())})
        end)

      assert_receive {:owner_got, {:exit_status, 1}}, 2000
      assert_receive {:owner_alive, true}, 1000
      refute_received {:EXIT, ^owner, _}
    end
  end

  describe "{pid, {:command, iodata}}" do
    test "writes to stdin" do
      {:ok, ps} = ProtonStream.open("cat", [])
      send(ps, {self(), {:command, "hello"}})
      assert_receive {^ps, {:data, "hello"}}, 1000
      assert ProtonStream.command(ps, ["a", ?b, ["c" | "d"]]) == :ok
      assert_receive {^ps, {:data, "abcd"}}, 1000
      ProtonStream.close(ps)
    end

    test "large writes arrive complete" do
      data = :binary.copy("0123456789abcdef", 1024 * 1024)
      {:ok, ps} = ProtonStream.open("wc", ["-c"])
      ProtonStream.command(ps, data)
      ProtonStream.eof(ps)
      assert %{stdout: out, exit: :normal} = collect(ps)
      assert String.trim(out) == Integer.to_string(byte_size(data))
    end

    test "commands from other processes are ignored" do
      {:ok, ps} = ProtonStream.open("cat", [])
      stranger = spawn(fn -> send(ps, {self(), {:command, "stranger"}}) end)
      ref = Process.monitor(stranger)
      assert_receive {:DOWN, ^ref, _, _, _}
      # ps handles messages in order: "mine" comes after the stranger's.
      send(ps, {self(), {:command, "mine"}})
      assert_receive {^ps, {:data, "mine"}}, 1000
      refute_received {^ps, {:data, "stranger" <> _}}
      ProtonStream.close(ps)
    end

    test "command/2 raises for data that is not iodata" do
      {:ok, ps} = ProtonStream.open("cat", [])
      assert_raise ArgumentError, fn -> ProtonStream.command(ps, [:not_iodata]) end
      ProtonStream.close(ps)
    end
  end

  describe "{pid, :close}" do
    test "replies {ps, :closed} once the process is gone, and ends the program" do
      {:ok, ps} = ProtonStream.open("cat", [])
      os_pid = ProtonStream.os_pid(ps)
      send(ps, {self(), :close})
      assert_receive {^ps, :closed}, 1000
      refute Process.alive?(ps)
      assert wait_until(fn -> not os_pid_alive?(os_pid) end, 2000)
      assert_receive {:EXIT, ^ps, :normal}
    end

    test "close/1 is the same" do
      {:ok, ps} = ProtonStream.open("cat", [])
      assert ProtonStream.close(ps) == :ok
      assert_receive {^ps, :closed}, 1000
      refute Process.alive?(ps)
    end

    test "from another process it is ignored" do
      {:ok, ps} = ProtonStream.open("cat", [])
      stranger = spawn(fn -> send(ps, {self(), :close}) end)
      ref = Process.monitor(stranger)
      assert_receive {:DOWN, ^ref, _, _, _}
      send(ps, {self(), {:command, "still here"}})
      assert_receive {^ps, {:data, "still here"}}, 1000
      assert Process.alive?(ps)
      ProtonStream.close(ps)
    end
  end

  describe "{pid, {:connect, new_pid}}" do
    test "hands ownership over: the old owner gets :connected, data goes to the new one" do
      {:ok, ps} = ProtonStream.open("cat", [])
      test_pid = self()

      new_owner =
        spawn_link(fn ->
          receive do
            {^ps, {:data, data}} -> send(test_pid, {:new_owner_got, data})
          end

          receive do
            :stop -> :ok
          end
        end)

      send(ps, {self(), {:connect, new_owner}})
      assert_receive {^ps, :connected}, 1000
      # The new owner's commands are accepted, the old owner's are not.
      send(ps, {self(), {:command, "from old"}})
      send(ps, {new_owner, {:command, "from new"}})
      assert_receive {:new_owner_got, "from new"}, 1000
      refute_received {^ps, {:data, _}}

      # The link moved: ps no longer dies with the old owner but with the new one.
      {:links, links} = Process.info(ps, :links)
      assert new_owner in links
      refute self() in links

      os_pid = ProtonStream.os_pid(ps)
      ref = Process.monitor(ps)
      Process.unlink(new_owner)
      Process.exit(new_owner, :kill)
      assert_receive {:DOWN, ^ref, :process, ^ps, {:shutdown, {:owner_exited, :killed}}}, 1000
      assert wait_until(fn -> not os_pid_alive?(os_pid) end, 2000)
    end

    test "connect/2 is the same; connecting to oneself is a no-op" do
      {:ok, ps} = ProtonStream.open("cat", [])
      assert ProtonStream.connect(ps, self()) == :ok
      assert_receive {^ps, :connected}, 1000
      ProtonStream.command(ps, "x")
      assert_receive {^ps, {:data, "x"}}, 1000
      ProtonStream.close(ps)
    end

    test "from another process it is ignored" do
      {:ok, ps} = ProtonStream.open("cat", [])
      test_pid = self()
      spawn(fn -> send(ps, {self(), {:connect, self()}}) end)
      send(ps, {test_pid, {:command, "mine"}})
      assert_receive {^ps, {:data, "mine"}}, 1000
      ProtonStream.close(ps)
    end
  end

  describe "eof/1" do
    test "closes stdin; the program sees end of file and keeps running until it exits" do
      {:ok, ps} = ProtonStream.open("sh", ["-c", "cat; echo after eof"])
      ProtonStream.command(ps, "abc\n")
      assert ProtonStream.eof(ps) == :ok
      assert %{stdout: "abc\nafter eof\n", exit: :normal} = collect(ps)
    end

    test "data written after eof is dropped with a warning" do
      {:ok, ps} = ProtonStream.open("sh", ["-c", "cat; sleep 0.3"])
      ProtonStream.eof(ps)

      log =
        ExUnit.CaptureLog.capture_log(fn ->
          ProtonStream.command(ps, "too late")
          assert %{stdout: "", exit: :normal} = collect(ps)
        end)

      assert log =~ "stdin_closed"
    end
  end

  describe "signal/2" do
    test "accepts names and numbers" do
      for {sig, num} <- [sigterm: 15, sigint: 2, sighup: 1, sigusr1: 10, sigkill: 9] do
        {:ok, ps} = ProtonStream.open("cat", [])
        assert ProtonStream.signal(ps, sig) == :ok
        assert %{exit: {:signal, ^num}} = collect(ps)
      end

      {:ok, ps} = ProtonStream.open("cat", [])
      ProtonStream.signal(ps, 12)
      assert %{exit: {:signal, 12}} = collect(ps)
    end

    test "goes to the program, which may handle it" do
      {:ok, ps} =
        ProtonStream.open("sh", [
          "-c",
          "trap 'echo got usr1; exit 7' USR1; echo ready; while :; do sleep 0.01; done"
        ])

      assert_receive {^ps, {:data, "ready\n"}}, 2000
      ProtonStream.signal(ps, :sigusr1)
      assert %{stdout: "got usr1\n", exit: {:exit_status, 7}} = collect(ps)
    end

    test "raises for unknown signals" do
      assert_raise ArgumentError, ~r/unknown signal :sigfoo/, fn ->
        ProtonStream.signal(self(), :sigfoo)
      end

      assert_raise ArgumentError, ~r/invalid signal 0/, fn -> ProtonStream.signal(self(), 0) end
      assert_raise ArgumentError, fn -> ProtonStream.signal(self(), 65) end
    end
  end

  describe "os_pid/1 and muontrap_path/0" do
    test "os_pid is the program's pid, a child of ps_port" do
      {:ok, ps} = ProtonStream.open("sleep", ["10"])
      os_pid = ProtonStream.os_pid(ps)

      assert File.read!("/proc/#{os_pid}/cmdline") ==
               "#{System.find_executable("sleep")}\0" <> "10\0"

      parent = os_ppid(os_pid)
      assert File.read!("/proc/#{parent}/comm") == "ps_port\n"
      ProtonStream.close(ps)
    end

    test "muontrap_path is the absolute path of the ps_port executable" do
      path = ProtonStream.muontrap_path()
      assert Path.type(path) == :absolute
      assert String.ends_with?(path, "/priv/ps_port")
      assert %{type: :regular, mode: mode} = File.stat!(path)
      assert Bitwise.band(mode, 0o111) != 0
    end
  end

  test "unexpected messages to the process are logged and ignored" do
    {:ok, ps} = ProtonStream.open("cat", [])

    log =
      ExUnit.CaptureLog.capture_log(fn ->
        send(ps, :hello)
        send(ps, {self(), :bogus})
        ProtonStream.command(ps, "ok")
        assert_receive {^ps, {:data, "ok"}}, 1000
      end)

    assert log =~ "unexpected message: :hello"
    ProtonStream.close(ps)
  end
end
