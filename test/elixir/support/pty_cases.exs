defmodule ProtonStreamTest.Cases.Pty do
  @moduledoc """
  `pty: true`, shared by every mode (`use ProtonStreamTest.Cases.Pty, mode:
  mode`; `m` is the mode's options): port mode in `ProtonStreamTest.PtyTest`,
  node mode in `ProtonStreamTest.NodeMode.PtyTest` (the suite's node runs on
  this host, so `pty_resize/2` reaches its terminal).
  """

  defmacro __using__(mode: mode) do
    quote do
      import ProtonStreamTest.Helpers

      setup do
        Process.flag(:trap_exit, true)
        ProtonStreamTest.Mode.context(unquote(mode))
      end

      test "stdin, stdout and stderr are a terminal of :pty_size", %{m: m} do
        script =
          "tty; stty size; test -t 0 && test -t 1 && test -t 2 && echo all-tty; echo err >&2"

        assert {out, 0} =
                 ProtonStream.cmd("sh", ["-c", script], [pty: true, pty_size: {40, 100}] ++ m)

        assert out =~ ~r"\A/dev/pts/\d+\r\n40 100\r\nall-tty\r\nerr\r\n\z"

        # Without :pty the same program has pipes.
        assert {"not a tty\n" <> _, _} = ProtonStream.cmd("tty", [], m)
      end

      test "input is typed into the terminal without echo; the exit status passes through",
           %{m: m} do
        assert {"hello\r\n", 0} =
                 ProtonStream.cmd("head", ["-n1"], [pty: true, input: "hello\n"] ++ m)

        assert {"", 3} = ProtonStream.cmd("sh", ["-c", "exit 3"], [pty: true] ++ m)
        assert {"it's\r\n", 0} = ProtonStream.cmd("echo", ["it's"], [pty: true] ++ m)
      end

      test "pty_resize/2 changes the window size and the program gets SIGWINCH", %{m: m} do
        script = "trap 'stty size' WINCH; echo ready; while :; do sleep 0.05; done"
        {:ok, ps} = ProtonStream.open("sh", ["-c", script], [pty: true] ++ m)
        assert_receive {^ps, {:data, "ready\r\n"}}, 10_000
        assert :ok = ProtonStream.pty_resize(ps, {50, 132})
        assert_receive {^ps, {:data, "50 132\r\n"}}, 10_000
        # The caller traps exits: stty's port left nothing here.
        refute_received {:EXIT, _, _}
        ProtonStream.close(ps)
        assert_receive {^ps, :closed}, 10_000
      end

      test "the terminal's process tree goes when the process is closed", %{m: m} do
        {:ok, ps} =
          ProtonStream.open("sh", ["-c", "sleep 1000 & echo ready; wait"], [pty: true] ++ m)

        assert_receive {^ps, {:data, "ready\r\n"}}, 10_000
        os_pid = ProtonStream.os_pid(ps)
        tree = [os_pid | os_descendants(os_pid)]
        # script, sh and sleep.
        assert length(tree) >= 3
        ProtonStream.close(ps)
        assert_receive {^ps, :closed}, 10_000
        assert wait_until(fn -> Enum.all?(tree, &(not os_pid_alive?(&1))) end)
      end

      test "options that cannot go with a terminal raise ArgumentError", %{m: m} do
        assert_raise ArgumentError, ~r/:arg0 with pty: true/, fn ->
          ProtonStream.open("true", [], [pty: true, arg0: "x"] ++ m)
        end

        assert_raise ArgumentError, ~r/:pty_size: it needs pty: true/, fn ->
          ProtonStream.open("true", [], [pty_size: {10, 10}] ++ m)
        end

        assert_raise ArgumentError, ~r/:pty_size/, fn ->
          ProtonStream.open("true", [], [pty: true, pty_size: {0, 10}] ++ m)
        end
      end
    end
  end
end
