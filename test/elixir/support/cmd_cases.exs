defmodule ProtonStreamTest.Cases.Cmd do
  @moduledoc """
  `ProtonStream.cmd/3` and `ProtonStream.stream!/3`, shared by every mode
  (`use ProtonStreamTest.Cases.Cmd, mode: mode`; each test gets `m`, the
  mode's options, from `ProtonStreamTest.Mode.context/1`): port mode in
  `ProtonStreamTest.CmdTest`, node mode in `ProtonStreamTest.NodeMode.CmdTest`.

  The modules using this are not async: the memory test measures the whole
  VM, which async tests would disturb.
  """

  @doc "Total VM memory after a garbage collection of every process."
  def vm_memory do
    for pid <- Process.list(), do: :erlang.garbage_collect(pid)
    :erlang.memory(:total)
  end

  defmacro __using__(mode: mode) do
    quote do
      import ProtonStreamTest.Helpers
      import ExUnit.CaptureLog
      import ExUnit.CaptureIO

      setup do
        ProtonStreamTest.Mode.context(unquote(mode))
      end

      # Nothing of a run is left in the caller's mailbox, now or a moment
      # later (late output, {:EXIT, ...}, :DOWN, replies).
      defp assert_mailbox_empty do
        Process.sleep(100)
        assert {:messages, []} = Process.info(self(), :messages)
      end

      describe "cmd/3" do
        test "returns the output and the exit status", %{m: m} do
          assert {"hello\n", 0} = ProtonStream.cmd("echo", ["hello"], m)
          assert {"out\n", 3} = ProtonStream.cmd("sh", ["-c", "echo out; exit 3"], m)
          assert {"", 143} = ProtonStream.cmd("sh", ["-c", "kill -TERM $$"], m)
        end

        test ":into a collectable, :cd, :env, :arg0", %{m: m} do
          assert {["a\nb\n"], 0} = ProtonStream.cmd("printf", ["a\\nb\\n"], [into: []] ++ m)
          assert {"/tmp\n", 0} = ProtonStream.cmd("pwd", [], [cd: "/tmp"] ++ m)

          assert {"v\n", 0} = ProtonStream.cmd("sh", ["-c", "echo $V"], [env: [{"V", "v"}]] ++ m)

          assert {"zero\n", 0} = ProtonStream.cmd("sh", ["-c", "echo $0"], [arg0: "zero"] ++ m)
        end

        test "ProtonStream's own options apply: :uid/:gid, :delay_to_sigkill", %{m: m} do
          assert {"65534 65534\n", 0} =
                   ProtonStream.cmd(
                     "sh",
                     ["-c", "echo $(id -u) $(id -g)"],
                     [uid: 65534, gid: 65534] ++ m
                   )

          assert ["65534\n"] =
                   ProtonStream.stream!("id", ["-u"], [uid: 65534, gid: 65534] ++ m)
                   |> Enum.to_list()

          # A program that ignores SIGTERM still goes at the timeout.
          script = ~S(trap "" TERM; echo $$; exec sleep 1000)

          assert {out, :timeout} =
                   ProtonStream.cmd(
                     "sh",
                     ["-c", script],
                     [timeout: 300, delay_to_sigkill: 100] ++ m
                   )

          os_pid = out |> String.trim() |> String.to_integer()
          assert wait_until(fn -> not os_pid_alive?(os_pid) end)
        end

        test "stderr: to the console by default, merged, discarded or logged", %{m: m} do
          script = "echo out; echo err >&2"

          stderr =
            capture_io(:stderr, fn ->
              assert {"out\n", 0} = ProtonStream.cmd("sh", ["-c", script], m)
            end)

          assert stderr =~ "err\n"

          assert {out, 0} = ProtonStream.cmd("sh", ["-c", script], [stderr_to_stdout: true] ++ m)
          assert out =~ "out\n" and out =~ "err\n"
          assert {out, 0} = ProtonStream.cmd("sh", ["-c", script], [stderr: :merge] ++ m)
          assert out =~ "err\n"

          assert capture_io(:stderr, fn ->
                   assert {"out\n", 0} =
                            ProtonStream.cmd("sh", ["-c", script], [stderr: :discard] ++ m)
                 end) == ""

          log =
            capture_log(fn ->
              assert {"out\n", 0} = ProtonStream.cmd("sh", ["-c", script], [stderr: :log] ++ m)
            end)

          assert log =~ "sh: err"
        end

        test ":input as a binary, iodata and an Enumerable, then end of file", %{m: m} do
          assert {"hello", 0} = ProtonStream.cmd("cat", [], [input: "hello"] ++ m)
          assert {"abcd", 0} = ProtonStream.cmd("cat", [], [input: ["a", ?b, ["c" | "d"]]] ++ m)
          lines = Stream.map(1..50_000, &"#{&1}\n")

          assert {"50000\n", 0} = ProtonStream.cmd("wc", ["-l"], [input: lines] ++ m)

          # Several MiB, read by a program that writes it all back.
          data = :binary.copy("0123456789abcdef", 256 * 1024)
          assert {^data, 0} = ProtonStream.cmd("cat", [], [input: data] ++ m)
        end

        test ":input the program does not read waits for it (bounded), and :timeout ends it",
             %{m: m} do
          # Stdin credit: the feeder holds the rest of the input back instead
          # of ps_port refusing it (stdin_overflow); the run ends as any other.
          data = :binary.copy("x", 8 * 1024 * 1024)
          opts = [input: data, stdin_limit: 1_048_576, timeout: 1_000] ++ m
          assert {"", :timeout} = ProtonStream.cmd("sleep", ["1000"], opts)
          assert_mailbox_empty()
        end

        test ":input far past :stdin_limit streams into a slow reader with bounded memory",
             %{m: m} do
          # 64 MiB of fresh 64 KiB binaries, through a 1 MiB :stdin_limit, into
          # a program that starts reading a second late. Without stdin credit
          # this failed with stdin_overflow.
          chunks = 1024
          input = Stream.map(1..chunks, fn i -> :binary.copy(<<rem(i, 256)>>, 65_536) end)
          before = ProtonStreamTest.Cases.Cmd.vm_memory()
          sampler = sample_peak_memory()
          opts = [input: input, stdin_limit: 1_048_576] ++ m
          assert {out, 0} = ProtonStream.cmd("sh", ["-c", "sleep 1; wc -c"], opts)
          assert String.trim(out) == Integer.to_string(chunks * 65_536)
          growth = stop_sampler(sampler) - before
          # Bounded by :stdin_limit / 2 in flight plus a chunk or two; the
          # bound is generous for GC lag.
          assert growth < 32 * 1024 * 1024, "VM grew #{div(growth, 1024)} KiB"

          # stream!/3 feeds the same way; a :stdin_limit below one chunk
          # still passes every chunk (one at a time).
          big = Stream.map(1..128, fn _ -> :binary.copy("y", 65_536) end)
          stream_opts = [input: big, stdin_limit: 1_048_576] ++ m
          counted = ProtonStream.stream!("sh", ["-c", "sleep 1; wc -c"], stream_opts)
          assert counted |> Enum.join() |> String.trim() == Integer.to_string(128 * 65_536)
          tiny = [input: ["ab", "c", "def"], stdin_limit: 1] ++ m
          assert ProtonStream.stream!("cat", [], tiny) |> Enum.join() == "abcdef"
          assert_mailbox_empty()
        end

        defp sample_peak_memory do
          parent = self()

          spawn_link(fn ->
            sample = fn sample, peak ->
              receive do
                {:stop, ^parent} -> send(parent, {:peak, self(), peak})
              after
                10 -> sample.(sample, max(peak, :erlang.memory(:total)))
              end
            end

            sample.(sample, :erlang.memory(:total))
          end)
        end

        defp stop_sampler(sampler) do
          send(sampler, {:stop, self()})
          assert_receive {:peak, ^sampler, peak}, 5_000 + slack_ms()
          peak
        end

        test "without :input the program's stdin is at end of file", %{m: m} do
          assert {"", 0} = ProtonStream.cmd("cat", [], m)
        end

        test ":timeout kills the whole tree and returns the output so far", %{m: m} do
          script = "sleep 1000 & echo $!; exec sleep 1000"
          t0 = System.monotonic_time(:millisecond)
          assert {out, :timeout} = ProtonStream.cmd("sh", ["-c", script], [timeout: 500] ++ m)
          assert System.monotonic_time(:millisecond) - t0 >= 500
          background = out |> String.trim() |> String.to_integer()
          assert wait_until(fn -> not os_pid_alive?(background) end, 3000)
        end

        test "leaves nothing in the caller's mailbox, trapping exits or not", %{m: m} do
          for trap <- [false, true] do
            Process.flag(:trap_exit, trap)
            assert {"x\n", 0} = ProtonStream.cmd("echo", ["x"], m)
            assert {_, 1} = ProtonStream.cmd("false", [], m)
            assert {_, :timeout} = ProtonStream.cmd("yes", [], [timeout: 100] ++ m)
            assert {_, 0} = ProtonStream.cmd("cat", [], [input: "abc"] ++ m)
            assert_mailbox_empty()
          end
        end

        @tag timeout: 120_000
        test "200 runs from 50 callers at once: every output right, nothing left behind",
             %{m: m} do
          results =
            1..200
            |> Task.async_stream(
              fn i ->
                Process.flag(:trap_exit, rem(i, 2) == 0)
                {out, status} = ProtonStream.cmd("sh", ["-c", "seq 1 #{i}; exit #{rem(i, 7)}"], m)
                {:messages, left} = Process.info(self(), :messages)
                {i, out, status, left}
              end,
              max_concurrency: 50,
              timeout: 60_000
            )
            |> Enum.map(fn {:ok, result} -> result end)

          for {i, out, status, left} <- results do
            assert out == Enum.map_join(1..i, &"#{&1}\n")
            assert status == rem(i, 7)
            assert left == []
          end

          assert_mailbox_empty()
        end

        test "a caller that dies takes the program's tree with it", %{m: m} do
          file = Path.join(System.tmp_dir!(), "proton_stream_cmd_#{rand_hex()}")
          on_exit(fn -> File.rm(file) end)
          script = "sleep 1000 & echo $! > #{file}; exec sleep 1000"
          caller = spawn(fn -> ProtonStream.cmd("sh", ["-c", script], m) end)

          assert wait_until(fn -> match?({:ok, <<_, _::binary>>}, File.read(file)) end)
          background = file |> File.read!() |> String.trim() |> String.to_integer()
          assert os_pid_alive?(background)
          Process.exit(caller, :kill)
          assert wait_until(fn -> not os_pid_alive?(background) end, 3000)
        end

        test "errors: not found raises ErlangError :enoent; bad options raise ArgumentError",
             %{m: m} do
          error =
            assert_raise ErlangError, fn -> ProtonStream.cmd("no_such_program_xyz", [], m) end

          assert error.original == :enoent

          assert_raise ArgumentError, ~r/:timeout/, fn ->
            ProtonStream.cmd("true", [], [timeout: -1] ++ m)
          end

          assert_raise ArgumentError, ~r/:stderr/, fn ->
            ProtonStream.cmd("true", [], [stderr: :nowhere] ++ m)
          end

          assert_raise ArgumentError, ~r/:bogus/, fn ->
            ProtonStream.cmd("true", [], [bogus: 1] ++ m)
          end

          assert_mailbox_empty()
        end

        test "a program that cannot be started raises ErlangError with the reason and why",
             %{m: m} do
          error =
            assert_raise ErlangError, fn ->
              ProtonStream.cmd("true", [], [cd: "/no/such/dir"] ++ m)
            end

          assert error.original == :enoent
          assert Exception.message(error) =~ "/no/such/dir"
          assert_mailbox_empty()
        end
      end

      describe "stream!/3" do
        test "is lazy: nothing runs until it is enumerated", %{m: m} do
          file = Path.join(System.tmp_dir!(), "proton_stream_lazy_#{rand_hex()}")
          stream = ProtonStream.stream!("touch", [file], m)
          Process.sleep(100)
          refute File.exists?(file)
          assert Enum.to_list(stream) == []
          assert File.exists?(file)
          File.rm!(file)
        end

        test "yields stdout in order, byte-exact", %{m: m} do
          expected = Enum.map_join(1..200_000, &"#{&1}\n")
          assert ProtonStream.stream!("seq", ["1", "200000"], m) |> Enum.join() == expected
        end

        test ":input and :stderr", %{m: m} do
          # Chunk boundaries are the program's: compare the bytes.
          assert "abc" ==
                   ProtonStream.stream!("cat", [], [input: Stream.map(~w(a b c), & &1)] ++ m)
                   |> Enum.join()

          out =
            ProtonStream.stream!("sh", ["-c", "echo out; echo err >&2"], [stderr: :merge] ++ m)
            |> Enum.join()

          assert out =~ "out\n" and out =~ "err\n"
        end

        test "halting early kills the tree and leaves nothing behind", %{m: m} do
          Process.flag(:trap_exit, true)
          script = "sleep 1000 & echo $!; exec yes"

          [first] = ProtonStream.stream!("sh", ["-c", script], m) |> Enum.take(1)
          [pid_line | _] = String.split(first, "\n")
          background = String.to_integer(pid_line)
          assert wait_until(fn -> not os_pid_alive?(background) end, 3000)
          assert_mailbox_empty()
        end

        test "a non-zero exit raises ExitError after all output was yielded", %{m: m} do
          test_pid = self()

          error =
            assert_raise ProtonStream.ExitError, fn ->
              ProtonStream.stream!("sh", ["-c", "seq 1 1000; exit 7"], m)
              |> Enum.each(&send(test_pid, {:chunk, &1}))
            end

          assert error.exit_status == 7
          assert error.reason == {:exit_status, 7}
          assert Exception.message(error) =~ "status 7"
          assert collect_chunks() == Enum.map_join(1..1000, &"#{&1}\n")

          error =
            assert_raise ProtonStream.ExitError, fn ->
              ProtonStream.stream!("sh", ["-c", "kill -KILL $$"], m) |> Enum.to_list()
            end

          assert error.reason == {:signal, 9}
          assert error.exit_status == 137
          assert_mailbox_empty()
        end

        @tag timeout: 120_000
        test "memory stays bounded with a slow consumer (64 MiB through, VM grows < 16 MiB)",
             %{m: m} do
          size = 64 * 1024 * 1024
          before = ProtonStreamTest.Cases.Cmd.vm_memory()

          {bytes, peak} =
            ProtonStream.stream!("head", ["-c", "#{size}", "/dev/zero"], m)
            |> Stream.with_index()
            |> Enum.reduce({0, 0}, fn {chunk, i}, {bytes, peak} ->
              # Slow: a pause every 16 chunks, and a look at the VM's memory.
              if rem(i, 16) == 0 do
                Process.sleep(5)
                {bytes + byte_size(chunk), max(peak, :erlang.memory(:total))}
              else
                {bytes + byte_size(chunk), peak}
              end
            end)

          assert bytes == size
          growth = peak - before

          assert growth < 16 * 1024 * 1024,
                 "the VM grew by #{div(growth, 1024)} KiB while 64 MiB went through"
        end
      end

      defp collect_chunks(acc \\ []) do
        receive do
          {:chunk, chunk} -> collect_chunks([acc | chunk])
        after
          0 -> IO.iodata_to_binary(acc)
        end
      end
    end
  end
end
