defmodule ProtonStreamTest.Cases.Options do
  @moduledoc """
  What every option does to a program, shared by the shared ps_port
  (`ProtonStreamTest.OptionsTest`) and node mode
  (`ProtonStreamTest.NodeMode.OptionsTest`); see
  `ProtonStreamTest.Cases.Messages` for how the sharing works.

  Not shared: `ProtonStream.Options.validate/4` itself (it starts nothing),
  which stays in `ProtonStreamTest.OptionsTest`.
  """

  @doc "The gid of group `name`, from /etc/group."
  def group_entry(name) do
    "/etc/group"
    |> File.read!()
    |> String.split("\n", trim: true)
    |> Enum.find_value({:error, :enoent}, fn line ->
      case String.split(line, ":") do
        [^name, _, gid | _] -> {:ok, %{gid: String.to_integer(gid)}}
        _ -> nil
      end
    end)
  end

  defmacro __using__(mode: mode) do
    quote do
      import ProtonStreamTest.Helpers

      setup do
        Process.flag(:trap_exit, true)
        ProtonStreamTest.Mode.context(unquote(mode))
      end

      describe "each option at work" do
        test ":cd", %{m: m} do
          assert %{stdout: "/tmp\n", exit: :normal} = run("pwd", [], [cd: "/tmp"] ++ m)
        end

        test ":env sets and unsets variables", %{m: m} do
          # PROTON_STREAM_TEST_INHERITED is set by test_helper.exs before the
          # suite's ps_port node starts, so both modes inherit it.
          result =
            run(
              "sh",
              ["-c", ~S(echo "$MY_TEST_VAR|${PROTON_STREAM_TEST_INHERITED-unset}|${HOME-unset}")],
              [env: [{"MY_TEST_VAR", "test value"}, {"HOME", nil}]] ++ m
            )

          assert result.stdout == "test value|inherited|unset\n"

          assert %{stdout: "unset\n"} =
                   run(
                     "sh",
                     ["-c", ~S(echo ${PROTON_STREAM_TEST_INHERITED-unset})],
                     [env: %{"PROTON_STREAM_TEST_INHERITED" => false}] ++ m
                   )
        end

        test ":arg0", %{m: m} do
          assert %{stdout: "zero\0/proc/self/cmdline\0"} =
                   run("cat", ["/proc/self/cmdline"], [arg0: "zero"] ++ m)
        end

        test ":uid and :gid, as numbers and names", %{m: m} do
          assert %{stdout: "65534 65534\n"} =
                   run("sh", ["-c", "echo $(id -u) $(id -g)"], [uid: 65534, gid: 65534] ++ m)

          {:ok, %{gid: nogroup}} = ProtonStreamTest.Cases.Options.group_entry("nogroup")

          assert %{stdout: out} =
                   run(
                     "sh",
                     ["-c", "echo $(id -un) $(id -g)"],
                     [uid: "nobody", gid: "nogroup"] ++ m
                   )

          assert out == "nobody #{nogroup}\n"
        end

        test ":stderr_to_stdout delivers stderr as data", %{m: m} do
          result =
            run("sh", ["-c", "echo out; echo err >&2; echo out2"], [stderr_to_stdout: true] ++ m)

          assert result.stdout == "out\nerr\nout2\n"
          assert result.stderr == ""
        end

        test ":capture_stderr_only delivers only stderr", %{m: m} do
          result = run("sh", ["-c", "echo out; echo err >&2"], [capture_stderr_only: true] ++ m)
          assert result.stdout == ""
          assert result.stderr == "err\n"
        end

        test "stderr_to_stdout with capture_stderr_only (as 1.8.3 accepts): capture_stderr_only wins",
             %{m: m} do
          result =
            run(
              "sh",
              ["-c", "echo out; echo err >&2"],
              [stderr_to_stdout: true, capture_stderr_only: true] ++ m
            )

          assert result.stdout == ""
          assert result.stderr == "err\n"
        end

        test ":stdio_window: a tiny window still delivers everything", %{m: m} do
          expected = Enum.map_join(1..2000, &"#{&1}\n")

          assert %{stdout: ^expected, exit: :normal} =
                   run("seq", ["1", "2000"], [stdio_window: 7] ++ m)
        end

        test ":delay_to_sigkill: SIGTERM first, SIGKILL after the delay", %{m: m} do
          {:ok, ps} =
            ProtonStream.open(
              "sh",
              ["-c", ~S(trap "echo term" TERM; echo ready; while :; do sleep 0.01; done)],
              [delay_to_sigkill: 200] ++ m
            )

          assert_receive {^ps, {:data, "ready\n"}}, 10_000
          os_pid = ProtonStream.os_pid(ps)
          t0 = System.monotonic_time(:millisecond)
          ProtonStream.close(ps)
          assert_receive {^ps, :closed}, 10_000
          assert wait_until(fn -> not os_pid_alive?(os_pid) end, 2000)
          assert System.monotonic_time(:millisecond) - t0 >= 200
        end

        test ":stdin_limit: commands past the limit are refused, and said so", %{m: m} do
          # sleep never reads: 64 KiB fit in the pipe, the rest waits in ps_port.
          # The refusals come before the exit.
          {:ok, ps} = ProtonStream.open("sleep", ["0.5"], [stdin_limit: 1000] ++ m)

          log =
            ExUnit.CaptureLog.capture_log(fn ->
              for _ <- 1..3, do: ProtonStream.command(ps, :binary.copy("x", 100_000))
              assert %{exit: :normal} = collect(ps)
            end)

          assert_refused(ps, :stdin_overflow, log)
        end

        test ":parallelism is accepted and passed to the port", %{m: m} do
          assert %{stdout: "x\n", exit: :normal} = run("echo", ["x"], [parallelism: true] ++ m)
          assert %{stdout: "x\n", exit: :normal} = run("echo", ["x"], [parallelism: false] ++ m)
        end

        test ":cgroup_path without :cgroup_controllers creates no cgroup (as upstream)", %{m: m} do
          assert %{stdout: "x\n", exit: :normal} =
                   run("echo", ["x"], [cgroup_path: "proton_stream_not_created"] ++ m)

          refute File.exists?(cgroup_dir("cpu", "proton_stream_not_created"))
        end
      end
    end
  end
end
