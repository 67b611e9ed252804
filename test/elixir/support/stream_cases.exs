defmodule ProtonStreamTest.Cases.Stream do
  @moduledoc """
  Output fidelity and flow control, shared by the shared ps_port
  (`ProtonStreamTest.StreamTest`) and node mode
  (`ProtonStreamTest.NodeMode.StreamTest`): nothing lost, nothing
  reordered, and in callback mode the window bounds what waits in the
  server's mailbox. See `ProtonStreamTest.Cases.Messages` for how the
  sharing works.

  Not shared: where message mode's output waits differs by nature. In port
  mode the local server forwards at once and the owner's mailbox is
  unbounded (`ProtonStreamTest.StreamTest`); in node mode there is no local
  server and the node bounds the owner's mailbox by the window
  (`ProtonStreamTest.NodeMode.NodeTest`).
  """

  defmodule SlowReader do
    @moduledoc false
    use GenServer
    @behaviour ProtonStream

    @impl GenServer
    def init(test_pid), do: {:ok, %{test_pid: test_pid, bytes: 0}}

    @impl ProtonStream
    def handle_stdout(data, state) do
      Process.sleep(20)
      send(state.test_pid, {:chunk, byte_size(data)})
      {:noreply, %{state | bytes: state.bytes + byte_size(data)}}
    end

    @impl GenServer
    def handle_call(:bytes, _from, state), do: {:reply, state.bytes, state}
  end

  defmacro __using__(mode: mode) do
    quote do
      import ProtonStreamTest.Helpers

      setup do
        Process.flag(:trap_exit, true)
        ProtonStreamTest.Mode.context(unquote(mode))
      end

      @tag timeout: 120_000
      test "seq 1 200000 arrives byte-exact, 20 runs out of 20", %{m: m} do
        expected = Enum.map_join(1..200_000, &"#{&1}\n")

        results =
          1..20
          |> Task.async_stream(
            fn _ ->
              Process.flag(:trap_exit, true)
              run("seq", ["1", "200000"], m, 30_000)
            end,
            max_concurrency: 4,
            timeout: 60_000
          )
          |> Enum.map(fn {:ok, result} -> result end)

        for result <- results do
          assert result.exit == :normal
          assert byte_size(result.stdout) == byte_size(expected)
          assert result.stdout == expected
        end
      end

      @tag timeout: 120_000
      test "a 256 MiB stream arrives complete (md5 checked)", %{m: m} do
        size = 256 * 1024 * 1024
        # tee copies the random bytes to our stdout (fd 3) and to md5sum,
        # whose digest goes to stderr.
        script = "{ head -c #{size} /dev/urandom | tee /dev/fd/3 | md5sum >&2; } 3>&1"
        {:ok, ps} = ProtonStream.open("sh", ["-c", script], m)
        {bytes, md5, stderr, reason} = consume(ps, 0, :erlang.md5_init(), [])

        assert reason == :normal
        assert bytes == size
        [digest, "-"] = stderr |> IO.iodata_to_binary() |> String.split()
        assert Base.encode16(:erlang.md5_final(md5), case: :lower) == digest
      end

      defp queued_output({from, {:data, data}}) when is_port(from) or is_pid(from), do: [data]
      defp queued_output({:"$ps_shared", _id, {:stdout, data}}), do: [data]
      defp queued_output(_msg), do: []

      defp consume(ps, bytes, md5, err) do
        receive do
          {^ps, {:data, data}} ->
            consume(ps, bytes + byte_size(data), :erlang.md5_update(md5, data), err)

          {^ps, {:error, data}} ->
            consume(ps, bytes, md5, [err | data])

          {:EXIT, ^ps, reason} ->
            {bytes, md5, err, reason}
        after
          30_000 -> flunk("stalled after #{bytes} bytes")
        end
      end

      test "stderr-heavy output does not stall, even with a small window", %{m: m} do
        # 16 MiB to stderr, interleaved with stdout lines, through a 4 KiB
        # window: only works if stderr is acknowledged like stdout.
        script = "for i in 1 2 3 4; do echo out$i; head -c 4194304 /dev/zero >&2; done; echo done"

        result = run("sh", ["-c", script], [stdio_window: 4096] ++ m, 60_000)
        assert result.exit == :normal
        assert result.stdout == "out1\nout2\nout3\nout4\ndone\n"
        assert byte_size(result.stderr) == 16 * 1024 * 1024
      end

      test "stderr-only output larger than the window with the default window", %{m: m} do
        result = run("sh", ["-c", "head -c 3000000 /dev/zero >&2"], m)
        assert result.exit == :normal
        assert byte_size(result.stderr) == 3_000_000
      end

      test "callback mode: a slow callback slows the program down (end-to-end window)",
           %{m: m} do
        window = 8192

        {:ok, pid} =
          ProtonStream.start_link(
            ProtonStreamTest.Cases.Stream.SlowReader,
            "cat",
            ["/dev/zero"],
            self(),
            [stdio_window: window] ++ m
          )

        for _ <- 1..10 do
          Process.sleep(30)
          {:messages, messages} = Process.info(pid, :messages)

          # From ps_port's port (a frame), from the shared port's router
          # (a payload) or from the node's pid (a payload).
          queued =
            Enum.sum(
              for msg <- messages,
                  data <- queued_output(msg),
                  do: byte_size(data)
            )

          # Frames carry a small header besides the payload.
          assert queued <= window + 64 * length(messages),
                 "#{queued} bytes queued with a #{window} byte window"
        end

        # In 300+ ms of 20 ms callbacks at most a window per callback got through.
        delivered = GenServer.call(pid, :bytes)
        assert delivered <= 40 * window
        ProtonStream.close(pid)
      end
    end
  end
end
