defmodule ProtonStreamTest.Cases.Callback do
  @moduledoc """
  Callback module mode (`ProtonStream.start_link/5`), shared by the shared ps_port
  (`ProtonStreamTest.CallbackTest`) and node mode
  (`ProtonStreamTest.NodeMode.CallbackTest`); see
  `ProtonStreamTest.Cases.Messages` for how the sharing works. Every test is
  shared: in node mode too the callback module runs in a local server, which
  owns the program's pid on the node.

  The callback modules the tests use are defined once, here.
  """

  defmodule Worker do
    use GenServer
    @behaviour ProtonStream

    def start_link({command, args, test_pid, opts}) do
      ProtonStream.start_link(__MODULE__, command, args, test_pid, opts)
    end

    @impl GenServer
    def init(test_pid) do
      send(test_pid, {:worker_started, self()})
      {:ok, %{test_pid: test_pid, buffer: ""}}
    end

    @impl ProtonStream
    def handle_stdout(data, state) do
      send(state.test_pid, {:stdout, data})
      {:noreply, %{state | buffer: state.buffer <> data}}
    end

    @impl ProtonStream
    def handle_stderr(data, state) do
      send(state.test_pid, {:stderr, data})
      {:noreply, state}
    end

    @impl ProtonStream
    def handle_exit(reason, state) do
      send(state.test_pid, {:exit, reason, state.buffer})
      {:stop, :normal, state}
    end

    @impl GenServer
    def handle_call(:buffer, _from, state), do: {:reply, state.buffer, state}

    def handle_call({:continue_then_reply, arg}, from, state),
      do: {:noreply, Map.put(state, :from, from), {:continue, arg}}

    @impl GenServer
    def handle_cast({:echo, msg}, state) do
      send(state.test_pid, {:cast, msg})
      {:noreply, state}
    end

    @impl GenServer
    def handle_continue(arg, state) do
      GenServer.reply(state.from, {:continued, arg})
      {:noreply, state}
    end

    @impl GenServer
    def handle_info(msg, state) do
      send(state.test_pid, {:info, msg})
      {:noreply, state}
    end

    @impl GenServer
    def terminate(reason, state) do
      send(state.test_pid, {:terminate, reason})
    end
  end

  # A module with no callbacks at all: everything is defaulted.
  defmodule Bare do
    @behaviour ProtonStream
  end

  # Stops from handle_stdout.
  defmodule Stopper do
    use GenServer
    @behaviour ProtonStream

    @impl GenServer
    def init(arg), do: {:ok, arg}

    @impl ProtonStream
    def handle_stdout(data, test_pid) do
      send(test_pid, {:stdout, data})
      {:stop, {:shutdown, :enough}, test_pid}
    end
  end

  # Counts the output it is given and, once it has had `limit` bytes, tells
  # the test and never returns: its program's window fills and stays full.
  defmodule Blocker do
    use GenServer
    @behaviour ProtonStream

    @impl GenServer
    def init({test_pid, limit}), do: {:ok, {test_pid, limit, 0}}

    @impl ProtonStream
    def handle_stdout(data, {test_pid, limit, seen}) do
      seen = seen + byte_size(data)

      if seen >= limit do
        send(test_pid, {:blocked, self(), seen})
        Process.sleep(:infinity)
      end

      {:noreply, {test_pid, limit, seen}}
    end
  end

  defmodule InitVariants do
    use GenServer
    @behaviour ProtonStream

    @impl GenServer
    def init({:continue, test_pid}), do: {:ok, test_pid, {:continue, :go}}
    def init(:ignore), do: :ignore
    def init(:stop), do: {:stop, :no_thanks}
    def init(:bad), do: :what

    @impl GenServer
    def handle_continue(:go, test_pid) do
      send(test_pid, {:continued, self()})
      {:noreply, test_pid}
    end
  end

  defmacro __using__(mode: mode) do
    quote do
      import ProtonStreamTest.Helpers
      alias ProtonStreamTest.Cases.Callback.{Bare, Blocker, InitVariants, Stopper, Worker}

      setup do
        Process.flag(:trap_exit, true)
        ProtonStreamTest.Mode.context(unquote(mode))
      end

      test "init/1 gets init_arg; handle_stdout/handle_stderr/handle_exit are called in order", %{
        m: m
      } do
        {:ok, pid} =
          Worker.start_link({"sh", ["-c", "echo out; echo err >&2; exit 4"], self(), m})

        assert_receive {:worker_started, ^pid}
        assert_receive {:stdout, "out\n"}, 10_000
        assert_receive {:stderr, "err\n"}, 10_000
        assert_receive {:exit, {:exit_status, 4}, "out\n"}, 10_000
        assert_receive {:terminate, :normal}
        assert_receive {:EXIT, ^pid, :normal}
      end

      test "exit reasons reach handle_exit/2", %{m: m} do
        for {cmd, args, reason} <- [
              {"true", [], :normal},
              {"false", [], {:exit_status, 1}},
              {"sh", ["-c", "kill -TERM $$"], {:signal, 15}}
            ] do
          {:ok, _pid} = Worker.start_link({cmd, args, self(), m})
          assert_receive {:exit, ^reason, ""}, 10_000
        end
      end

      test "all output is handled before handle_exit/2", %{m: m} do
        expected = Enum.map_join(1..50_000, &"#{&1}\n")
        {:ok, _pid} = Worker.start_link({"seq", ["1", "50000"], self(), m})
        assert_receive {:exit, :normal, ^expected}, 10_000
      end

      test "the :name option registers the process; os_pid/1 works", %{m: m} do
        name = :"proton_stream_worker_#{rand_hex()}"
        {:ok, pid} = Worker.start_link({"cat", [], self(), [name: name] ++ m})
        assert Process.whereis(name) == pid
        assert File.read!("/proc/#{ProtonStream.os_pid(name)}/comm") == "cat\n"
        ProtonStream.command(name, "via name")
        assert_receive {:stdout, "via name"}, 10_000
        GenServer.stop(name)
      end

      test "stdin requests are accepted from any process", %{m: m} do
        {:ok, pid} = Worker.start_link({"cat", [], self(), m})
        other = spawn(fn -> ProtonStream.command(pid, "from another process") end)
        ref = Process.monitor(other)
        assert_receive {:DOWN, ^ref, _, _, _}
        assert_receive {:stdout, "from another process"}, 10_000
        ProtonStream.eof(pid)
        assert_receive {:exit, :normal, "from another process"}, 10_000
      end

      test "handle_call/3, handle_cast/2, handle_info/2 and handle_continue/2 are used", %{m: m} do
        {:ok, pid} = Worker.start_link({"cat", [], self(), m})
        ProtonStream.command(pid, "abc")
        assert_receive {:stdout, "abc"}, 10_000
        assert GenServer.call(pid, :buffer) == "abc"
        assert GenServer.call(pid, {:continue_then_reply, 42}) == {:continued, 42}
        GenServer.cast(pid, {:echo, :hi})
        assert_receive {:cast, :hi}
        send(pid, :some_info)
        assert_receive {:info, :some_info}
        send(pid, {self(), :not_a_request})
        assert_receive {:info, {_, :not_a_request}}
        GenServer.stop(pid)
        assert_receive {:terminate, :normal}
      end

      test ":close from any process: the sender gets {ps, :closed}, terminate/2 runs, the child is gone",
           %{m: m} do
        {:ok, pid} = Worker.start_link({"cat", [], self(), m})
        os_pid = ProtonStream.os_pid(pid)
        ProtonStream.close(pid)
        assert_receive {^pid, :closed}, 10_000
        refute Process.alive?(pid)
        assert_receive {:terminate, :normal}
        assert wait_until(fn -> not os_pid_alive?(os_pid) end, 2000)
      end

      test "GenServer.stop kills the child", %{m: m} do
        {:ok, pid} =
          Worker.start_link(
            {"sh", ["-c", "sleep 1000 & sleep 1000 & echo ready; wait"], self(), m}
          )

        assert_receive {:stdout, "ready\n"}, 10_000
        os_pid = ProtonStream.os_pid(pid)
        assert wait_until(fn -> length(os_descendants(os_pid)) == 2 end)
        tree = [os_pid | os_descendants(os_pid)]
        GenServer.stop(pid)
        assert wait_until(fn -> Enum.all?(tree, &(not os_pid_alive?(&1))) end, 2000)
      end

      test "a module without callbacks: output dropped, the exit reason stops it", %{m: m} do
        {:ok, pid} =
          ProtonStream.start_link(Bare, "sh", ["-c", "echo ignored; exit 3"], :state, m)

        assert_receive {:EXIT, ^pid, {:exit_status, 3}}, 10_000
        {:ok, pid} = ProtonStream.start_link(Bare, "true", [], [], m)
        assert_receive {:EXIT, ^pid, :normal}, 10_000
      end

      test "{:stop, reason, state} from handle_stdout/2 stops it and kills the child", %{m: m} do
        {:ok, pid} =
          ProtonStream.start_link(Stopper, "sh", ["-c", "echo $$; exec sleep 1000"], self(), m)

        assert_receive {:stdout, os_pid}, 10_000
        assert_receive {:EXIT, ^pid, {:shutdown, :enough}}, 10_000
        os_pid = os_pid |> String.trim() |> String.to_integer()
        assert wait_until(fn -> not os_pid_alive?(os_pid) end, 2000)
      end

      test "init/1 results: {:continue, _}, :ignore, {:stop, _}, bad values", %{m: m} do
        {:ok, pid} = ProtonStream.start_link(InitVariants, "cat", [], {:continue, self()}, m)
        assert_receive {:continued, ^pid}, 10_000
        GenServer.stop(pid)

        assert ProtonStream.start_link(InitVariants, "cat", [], :ignore, m) == :ignore
        assert ProtonStream.start_link(InitVariants, "cat", [], :stop, m) == {:error, :no_thanks}
        # The failed server's exit signal: :no_thanks on OTP 25, :normal since OTP 26.
        assert_receive {:EXIT, _, reason} when reason in [:no_thanks, :normal]

        assert ProtonStream.start_link(InitVariants, "cat", [], :bad, m) ==
                 {:error, {:bad_return_value, :what}}
      end

      test "a program that cannot be started: {:error, {:spawn_error, reason, message}}", %{m: m} do
        assert {:error, {:spawn_error, :baduser, _}} =
                 Worker.start_link({"true", [], self(), [uid: "no_such_user_xyz"] ++ m})
      end

      test "bad options raise in the caller", %{m: m} do
        assert_raise ArgumentError, ~r/:stdio_window/, fn ->
          Worker.start_link({"cat", [], self(), [stdio_window: 0] ++ m})
        end

        assert_raise ErlangError, fn ->
          Worker.start_link({"no_such_program_xyz", [], self(), m})
        end
      end

      # The server acks what its callbacks were given in batches of half
      # the window: small chunks, more than a window in all, must flow,
      # with an odd and a tiny window too.
      test "acks in batches: round trips of small chunks never stall, whatever the window",
           %{m: m} do
        for window <- [1, 999, nil] do
          opts = if window, do: [stdio_window: window] ++ m, else: m
          {:ok, worker} = Worker.start_link({"cat", [], self(), opts})
          assert_receive {:worker_started, ^worker}
          # 3 000 × 100 B: 300 000 bytes, more than the default window (256 KiB).
          count = if window == 1, do: 50, else: 3000

          for i <- 1..count do
            msg = <<i::32, :binary.copy("y", 96)::binary>>
            ProtonStream.command(worker, msg)
            assert receive_stdout(100, []) == msg, "window #{inspect(window)}, chunk #{i}"
          end

          ProtonStream.close(worker)
          assert_receive {^worker, :closed}, 5000 + slack_ms()
        end
      end

      # Batching does not loosen the window: a callback that stopped
      # returning, after several batches were acked, holds at most one
      # window in its server's mailbox.
      test "acks in batches: a callback that never returns holds at most one window",
           %{m: m} do
        window = 65_536

        {:ok, blocker} =
          ProtonStream.start_link(
            Blocker,
            "sh",
            ["-c", "read x; exec cat /dev/zero"],
            {self(), 4 * window},
            [stdio_window: window] ++ m
          )

        %{transport: transport, handle: handle} = :sys.get_state(blocker)
        os_pid = ProtonStream.os_pid(blocker)
        ProtonStream.command(blocker, "go\n")
        assert_receive {:blocked, ^blocker, _seen}, 10_000

        held = fn ->
          {:messages, msgs} = Process.info(blocker, :messages)

          for msg <- msgs,
              {:event, {:stdout, data}} <- [transport.event(msg, handle)],
              reduce: 0,
              do: (n -> n + byte_size(data))
        end

        Process.sleep(200)
        assert held.() <= window
        Process.sleep(200)
        assert held.() <= window

        Process.unlink(blocker)
        Process.exit(blocker, :kill)
        if os_pid, do: assert(wait_until(fn -> not os_pid_alive?(os_pid) end, 5000))
      end

      defp receive_stdout(0, acc), do: IO.iodata_to_binary(acc)

      defp receive_stdout(left, acc) do
        receive do
          {:stdout, d} when byte_size(d) <= left -> receive_stdout(left - byte_size(d), [acc, d])
        after
          5000 + slack_ms() ->
            flunk("no echo from cat for 5 s + slack (#{left} bytes missing): a stalled window?")
        end
      end

      test "under a Supervisor, a start error is reported, not raised", %{m: m} do
        children = [
          %{id: :w, start: {Worker, :start_link, [{"no_such_program_xyz", [], self(), m}]}}
        ]

        assert {:error, {:shutdown, {:failed_to_start_child, :w, _}}} =
                 Supervisor.start_link(children, strategy: :one_for_one)
      end
    end
  end
end
