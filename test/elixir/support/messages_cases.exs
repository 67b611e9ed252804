defmodule ProtonStreamTest.Cases.Messages do
  @moduledoc """
  Message mode, shared by the shared ps_port (`ProtonStreamTest.MessagesTest`),
  `isolated: true` (`ProtonStreamTest.Isolated.MessagesTest`) and node mode
  (`ProtonStreamTest.NodeMode.MessagesTest`): every message to and from a
  ProtonStream process. `use ProtonStreamTest.Cases.Messages, mode: :shared
  | :isolated | :node` inserts the tests; each test gets `m`, the mode's
  options, from `ProtonStreamTest.Mode.context/1`.

  Not shared, because they are about the local server (shared and
  isolated), and live in `ProtonStreamTest.Cases.Local`:

    * the owner is *linked* to `ps`, and the link moves with `:connect`
      (node mode: `ps` is the node's pid and nothing is linked, see
      `ProtonStreamTest.NodeMode.NodeTest`);
    * `{ps, :closed}` comes after `ps` is gone (node mode: `ps` is gone
      after the `{:EXIT, ps, :normal}` that follows `:closed`);
    * the server's stop reason `{:shutdown, {:owner_exited, reason}}`;
    * unexpected messages are logged here (a node logs them itself);
    * `signal/2`'s argument checks and `muontrap_path/0`, which start no
      program (in `ProtonStreamTest.MessagesTest`).
  """

  defmacro __using__(mode: mode) do
    quote do
      import ProtonStreamTest.Helpers

      setup do
        Process.flag(:trap_exit, true)
        ProtonStreamTest.Mode.context(unquote(mode))
      end

      describe "open/3" do
        test "returns a process running the real program", %{m: m} do
          {:ok, ps} = ProtonStream.open("cat", [], m)
          os_pid = ProtonStream.os_pid(ps)
          assert File.read!("/proc/#{os_pid}/comm") == "cat\n"
          assert os_pid_alive?(os_pid)
          ProtonStream.close(ps)
          assert_receive {^ps, :closed}, 10_000
        end

        test "args reach the program unchanged", %{m: m} do
          args = ["a b", "", "-n", "ünïcode", "$HOME", "*"]
          script = ~S(for a in "$@"; do printf '[%s]' "$a"; done)

          assert run("sh", ["-c", script, "sh" | args], m).stdout ==
                   Enum.map_join(args, &"[#{&1}]")
        end

        test "an absolute path works as command", %{m: m} do
          assert %{stdout: "hi\n", exit: :normal} = run("/bin/echo", ["hi"], m)
        end
      end

      describe "to the owner" do
        test "{ps, {:data, bin}} carries stdout", %{m: m} do
          assert %{stdout: "hello\n", stderr: "", exit: :normal} = run("echo", ["hello"], m)
        end

        test "{ps, {:error, bin}} carries stderr", %{m: m} do
          assert %{stdout: "", stderr: "oops\n", exit: :normal} =
                   run("sh", ["-c", "echo oops >&2"], m)
        end

        test "stdout and stderr each keep their order", %{m: m} do
          script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done"
          result = run("sh", ["-c", script], m)
          assert result.stdout == "out1\nout2\nout3\nout4\nout5\n"
          assert result.stderr == "err1\nerr2\nerr3\nerr4\nerr5\n"
        end

        test "{:EXIT, ps, reason} comes after all output, once, as a message", %{m: m} do
          {:ok, ps} = ProtonStream.open("sh", ["-c", "echo last words; exit 3"], m)
          assert_receive {^ps, {:data, "last words\n"}}, 10_000
          assert_receive {:EXIT, ^ps, {:exit_status, 3}}, 10_000
          assert wait_until(fn -> not ps_alive?(ps) end, 1000)
          refute_receive {:EXIT, ^ps, _}, 100
        end

        test "an owner that does not trap exits is not killed by a failing program", %{m: m} do
          test_pid = self()

          owner =
            spawn(fn ->
              {:ok, ps} = ProtonStream.open("false", [], m)

              receive do
                {:EXIT, ^ps, reason} -> send(test_pid, {:owner_got, reason})
              end

              send(test_pid, {:owner_alive, Process.alive?(self())})
            end)

          assert_receive {:owner_got, {:exit_status, 1}}, 10_000
          assert_receive {:owner_alive, true}, 10_000
          refute_received {:EXIT, ^owner, _}
        end
      end

      describe "{pid, {:command, iodata}}" do
        test "writes to stdin", %{m: m} do
          {:ok, ps} = ProtonStream.open("cat", [], m)
          send(ps, {self(), {:command, "hello"}})
          assert_receive {^ps, {:data, "hello"}}, 10_000
          assert ProtonStream.command(ps, ["a", ?b, ["c" | "d"]]) == :ok
          assert_receive {^ps, {:data, "abcd"}}, 10_000
          ProtonStream.close(ps)
        end

        test "large writes arrive complete", %{m: m} do
          data = :binary.copy("0123456789abcdef", 1024 * 1024)
          {:ok, ps} = ProtonStream.open("wc", ["-c"], m)
          ProtonStream.command(ps, data)
          ProtonStream.eof(ps)
          assert %{stdout: out, exit: :normal} = collect(ps)
          assert String.trim(out) == Integer.to_string(byte_size(data))
        end

        test "commands from other processes are ignored", %{m: m} do
          {:ok, ps} = ProtonStream.open("cat", [], m)
          stranger = spawn(fn -> send(ps, {self(), {:command, "stranger"}}) end)
          ref = Process.monitor(stranger)
          assert_receive {:DOWN, ^ref, _, _, _}
          # ps handles messages in order: "mine" comes after the stranger's.
          send(ps, {self(), {:command, "mine"}})
          assert_receive {^ps, {:data, "mine"}}, 10_000
          refute_received {^ps, {:data, "stranger" <> _}}
          ProtonStream.close(ps)
        end

        test "command/2 raises for data that is not iodata", %{m: m} do
          {:ok, ps} = ProtonStream.open("cat", [], m)
          assert_raise ArgumentError, fn -> ProtonStream.command(ps, [:not_iodata]) end
          ProtonStream.close(ps)
        end
      end

      describe "{pid, :close}" do
        test "replies {ps, :closed}, ends the program, then ps is gone", %{m: m} do
          {:ok, ps} = ProtonStream.open("cat", [], m)
          os_pid = ProtonStream.os_pid(ps)
          send(ps, {self(), :close})
          assert_receive {^ps, :closed}, 10_000
          assert wait_until(fn -> not os_pid_alive?(os_pid) end, 2000)
          assert_receive {:EXIT, ^ps, :normal}, 10_000
          assert wait_until(fn -> not ps_alive?(ps) end, 1000)
        end

        test "close/1 is the same", %{m: m} do
          {:ok, ps} = ProtonStream.open("cat", [], m)
          assert ProtonStream.close(ps) == :ok
          assert_receive {^ps, :closed}, 10_000
          assert wait_until(fn -> not ps_alive?(ps) end, 1000)
        end

        test "from another process it is ignored", %{m: m} do
          {:ok, ps} = ProtonStream.open("cat", [], m)
          stranger = spawn(fn -> send(ps, {self(), :close}) end)
          ref = Process.monitor(stranger)
          assert_receive {:DOWN, ^ref, _, _, _}
          send(ps, {self(), {:command, "still here"}})
          assert_receive {^ps, {:data, "still here"}}, 10_000
          assert ps_alive?(ps)
          ProtonStream.close(ps)
        end
      end

      describe "{pid, {:connect, new_pid}}" do
        test "hands ownership over: :connected to the old owner, data to the new one; " <>
               "the program ends with its new owner",
             %{m: m} do
          {:ok, ps} = ProtonStream.open("cat", [], m)
          test_pid = self()

          new_owner =
            spawn(fn ->
              receive do
                {^ps, {:data, data}} -> send(test_pid, {:new_owner_got, data})
              end

              Process.sleep(:infinity)
            end)

          send(ps, {self(), {:connect, new_owner}})
          assert_receive {^ps, :connected}, 10_000
          # The new owner's commands are accepted, the old owner's are not.
          send(ps, {self(), {:command, "from old"}})
          send(ps, {new_owner, {:command, "from new"}})
          assert_receive {:new_owner_got, "from new"}, 10_000
          refute_received {^ps, {:data, _}}

          os_pid = ProtonStream.os_pid(ps)
          Process.exit(new_owner, :kill)
          assert wait_until(fn -> not os_pid_alive?(os_pid) end, 2000)
          assert wait_until(fn -> not ps_alive?(ps) end, 1000)
        end

        test "connect/2 is the same; connecting to oneself is a no-op", %{m: m} do
          {:ok, ps} = ProtonStream.open("cat", [], m)
          assert ProtonStream.connect(ps, self()) == :ok
          assert_receive {^ps, :connected}, 10_000
          ProtonStream.command(ps, "x")
          assert_receive {^ps, {:data, "x"}}, 10_000
          ProtonStream.close(ps)
        end

        test "from another process it is ignored", %{m: m} do
          {:ok, ps} = ProtonStream.open("cat", [], m)
          test_pid = self()
          spawn(fn -> send(ps, {self(), {:connect, self()}}) end)
          send(ps, {test_pid, {:command, "mine"}})
          assert_receive {^ps, {:data, "mine"}}, 10_000
          ProtonStream.close(ps)
        end
      end

      describe "eof/1" do
        test "closes stdin; the program sees end of file and keeps running until it exits",
             %{m: m} do
          {:ok, ps} = ProtonStream.open("sh", ["-c", "cat; echo after eof"], m)
          ProtonStream.command(ps, "abc\n")
          assert ProtonStream.eof(ps) == :ok
          assert %{stdout: "abc\nafter eof\n", exit: :normal} = collect(ps)
        end

        test "data written after eof is dropped, and said so", %{m: m} do
          {:ok, ps} = ProtonStream.open("sh", ["-c", "cat; sleep 0.3"], m)
          ProtonStream.eof(ps)

          log =
            ExUnit.CaptureLog.capture_log(fn ->
              ProtonStream.command(ps, "too late")
              assert %{stdout: "", exit: :normal} = collect(ps)
            end)

          assert_refused(ps, :stdin_closed, log)
        end
      end

      describe "signal/2" do
        test "accepts names and numbers", %{m: m} do
          for {sig, num} <- [sigterm: 15, sigint: 2, sighup: 1, sigusr1: 10, sigkill: 9] do
            {:ok, ps} = ProtonStream.open("cat", [], m)
            assert ProtonStream.signal(ps, sig) == :ok
            assert %{exit: {:signal, ^num}} = collect(ps)
          end

          {:ok, ps} = ProtonStream.open("cat", [], m)
          ProtonStream.signal(ps, 12)
          assert %{exit: {:signal, 12}} = collect(ps)
        end

        test "goes to the program, which may handle it", %{m: m} do
          script = "trap 'echo got usr1; exit 7' USR1; echo ready; while :; do sleep 0.01; done"
          {:ok, ps} = ProtonStream.open("sh", ["-c", script], m)

          assert_receive {^ps, {:data, "ready\n"}}, 10_000
          ProtonStream.signal(ps, :sigusr1)
          assert %{stdout: "got usr1\n", exit: {:exit_status, 7}} = collect(ps)
        end
      end

      describe "os_pid/1" do
        test "os_pid is the program's pid, a child of ps_port", %{m: m} do
          {:ok, ps} = ProtonStream.open("sleep", ["10"], m)
          os_pid = ProtonStream.os_pid(ps)

          # argv[0] differs: the absolute path in port mode (the shim looks
          # the command up), the command as given in node mode.
          assert [_argv0, "10", ""] = String.split(File.read!("/proc/#{os_pid}/cmdline"), "\0")

          assert File.read_link!("/proc/#{os_pid}/exe") ==
                   real_path(System.find_executable("sleep"))

          # Node mode runs in ps_port_node (exec'd by `ps_port node`), an
          # isolated child without a cgroup under ps_port_lean.
          helper =
            case unquote(mode) do
              :node -> "ps_port_node\n"
              :isolated -> "ps_port_lean\n"
              :shared -> "ps_port\n"
            end

          parent = os_ppid(os_pid)
          assert File.read!("/proc/#{parent}/comm") == helper
          ProtonStream.close(ps)
        end
      end
    end
  end
end
