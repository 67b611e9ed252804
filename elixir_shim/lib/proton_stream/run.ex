defmodule ProtonStream.Run do
  @moduledoc false
  # The engine under ProtonStream.cmd/3 and ProtonStream.stream!/3: a
  # callback module for ProtonStream.start_link/5 whose server hands stdout
  # to one consumer process, one chunk at a time, on demand.
  #
  # Flow: the server sends `{ref, {:data, chunk}}` to the consumer and blocks
  # in handle_stdout/2 until the consumer answers `{ref, :more}`. Only then
  # does the callback return and the server acknowledge the chunk to
  # ps_port, so at most one chunk waits in the consumer's mailbox and at most
  # `:stdio_window` bytes in the server's: memory is bounded by the window
  # whatever the consumer's speed, and a slow consumer slows the program.
  #
  # The consumer ends the run early with `{ref, :halt}` (or by dying: the
  # server monitors it); the server then stops, which closes the port, and
  # ps_port takes the program's whole tree down. The last message to the
  # consumer is `{ref, {:exit, reason}}` after all output, or
  # `{ref, {:failed, kind, detail}}`. The server unlinks itself from its
  # starter in init/1, so the consumer's mailbox never sees an `{:EXIT, ...}`;
  # the consumer monitors the server instead.
  #
  # `:input` is written by a feeder process linked to the server. The feeder
  # hands each chunk to the server with a call, so it runs at most one chunk
  # ahead of the server, whose mailbox stays short. The server opens the
  # program with stdin credit (it exports handle_stdin_written/2): ps_port
  # reports the stdin bytes it has written to the program, and the server
  # keeps at most half of `:stdin_limit` sent and not yet reported, holding
  # the feeder's call until there is room. So ps_port never refuses :input
  # (stdin_overflow), and an Enumerable of any size streams through a slow
  # program with bounded memory.

  require Logger

  @behaviour ProtonStream

  # Stdin is written in pieces of this size (ps_port frames stay small).
  @input_chunk 65_536

  # ps_port's :stdin_limit when none is given (docs/protocol.md).
  @default_stdin_limit ProtonStream.Limits.fetch!(:stdin_limit_default)

  @typedoc "What to do with the program's stderr."
  @type stderr_mode :: :console | :log | :discard | :merge

  @doc """
  Starts a run of `command` for the calling process (the consumer). Returns
  `{server, ref, monitor}`; raises like `ProtonStream.open/3` for bad options
  or a program that is not found, and `ErlangError` (with the reason atom and
  ps_port's words) when the program cannot be started.
  """
  @spec start!(binary(), [binary()], keyword(), nil | iodata() | Enumerable.t(), stderr_mode()) ::
          {pid(), reference(), reference()}
  def start!(command, args, ps_opts, input, stderr) do
    ref = make_ref()

    ps_opts =
      if stderr == :merge, do: Keyword.put(ps_opts, :stderr_to_stdout, true), else: ps_opts

    init_arg = %{
      consumer: self(),
      ref: ref,
      input: input,
      stderr: stderr,
      command: command,
      # Stdin sent and not yet reported written, at most (one chunk is
      # always sent into an empty pipeline, so ps_port takes it).
      max_in_flight: max(div(Keyword.get(ps_opts, :stdin_limit, @default_stdin_limit), 2), 1)
    }

    case ProtonStream.start_link(__MODULE__, command, args, init_arg, ps_opts) do
      {:ok, server} ->
        {server, ref, Process.monitor(server)}

      {:error, {:spawn_error, reason, message}} ->
        raise ErlangError, original: reason, reason: ": " <> message

      {:error, reason} ->
        raise ErlangError, original: reason
    end
  end

  @doc """
  Waits for the next event of a run: `{:data, chunk}` (answer with `more/2`),
  `{:exit, reason}`, `{:failed, message}`, or `:timeout` after `timeout`.
  """
  @spec next({pid(), reference(), reference()}, timeout()) ::
          {:data, binary()} | {:exit, ProtonStream.exit_reason()} | {:failed, binary()} | :timeout
  def next({_server, ref, monitor}, timeout) do
    receive do
      {^ref, {:data, data}} ->
        {:data, data}

      {^ref, {:exit, reason}} ->
        await_down(monitor)
        {:exit, reason}

      {^ref, {:failed, message}} ->
        await_down(monitor)
        {:failed, message}

      {:DOWN, ^monitor, :process, _, reason} ->
        {:failed, "the ProtonStream process ended without reporting the exit: #{inspect(reason)}"}
    after
      timeout -> :timeout
    end
  end

  @doc "Asks for the chunk after the one just received."
  @spec more({pid(), reference(), reference()}) :: :ok
  def more({server, ref, _monitor}) do
    send(server, {ref, :more})
    :ok
  end

  @doc """
  Ends a run that has not reported its exit: the server stops, which takes
  the program's tree down. Returns once the server is gone, with no message
  of the run left in the caller's mailbox.
  """
  @spec halt({pid(), reference(), reference()}) :: :ok
  def halt({server, ref, monitor}) do
    # A run whose end next/2 reported has been waited for already.
    if Process.alive?(server) do
      send(server, {ref, :halt})

      receive do
        {:DOWN, ^monitor, :process, _, _} -> :ok
      after
        5_000 ->
          Process.exit(server, :kill)
          await_down(monitor)
      end
    else
      Process.demonitor(monitor, [:flush])
    end

    flush(ref)
  end

  # The server stops right after its last message to the consumer.
  defp await_down(monitor) do
    receive do
      {:DOWN, ^monitor, :process, _, _} -> :ok
    end
  end

  # Nothing can follow the DOWN: drop whatever the server sent before it.
  defp flush(ref) do
    receive do
      {^ref, _} -> flush(ref)
    after
      0 -> :ok
    end
  end

  @doc """
  `System.cmd/3` run from a process of its own, so that the caller, which
  may trap exits (a ProtonStream server does), gets no `{:EXIT, port, _}`
  from the command's port. Returns what `System.cmd/3` returns, or
  `{"", :error}` when the command could not be run.
  """
  @spec os_cmd(binary(), [binary()], keyword()) :: {binary(), non_neg_integer() | :error}
  def os_cmd(command, args, opts \\ []) do
    ref = make_ref()
    parent = self()

    {pid, monitor} =
      spawn_monitor(fn ->
        result =
          try do
            System.cmd(command, args, opts)
          rescue
            _ -> {"", :error}
          end

        send(parent, {ref, result})
      end)

    receive do
      {^ref, result} ->
        Process.demonitor(monitor, [:flush])
        result

      {:DOWN, ^monitor, :process, ^pid, _} ->
        {"", :error}
    end
  end

  @doc "Exit status of a reason the way `System.cmd/3` reports it."
  @spec exit_status(ProtonStream.exit_reason()) :: non_neg_integer()
  def exit_status(:normal), do: 0
  def exit_status({:exit_status, status}), do: status
  def exit_status({:signal, signum}), do: 128 + signum

  ## The server side (callbacks of ProtonStream.start_link/5)

  @doc false
  def init(%{consumer: consumer, input: input} = arg) do
    Process.unlink(consumer)
    monitor = Process.monitor(consumer)
    server = self()

    feeder =
      case input do
        nil ->
          # No input: the program sees end of file at once.
          send(server, {server, :eof})
          nil

        input ->
          spawn_link(fn -> feed(server, input) end)
      end

    {:ok, Map.merge(arg, %{monitor: monitor, feeder: feeder, in_flight: 0, held: nil})}
  end

  @impl ProtonStream
  def handle_stdout(data, %{consumer: consumer, ref: ref, monitor: monitor} = state) do
    send(consumer, {ref, {:data, data}})

    receive do
      {^ref, :more} -> {:noreply, state}
      {^ref, :halt} -> {:stop, :normal, state}
      {:DOWN, ^monitor, :process, _, _} -> {:stop, :normal, state}
    end
  end

  @impl ProtonStream
  def handle_stderr(data, %{stderr: :console} = state) do
    IO.binwrite(:standard_error, data)
    {:noreply, state}
  end

  def handle_stderr(data, %{stderr: :log} = state) do
    Logger.warning("#{state.command}: " <> String.trim_trailing(data))
    {:noreply, state}
  end

  def handle_stderr(_data, state), do: {:noreply, state}

  @impl ProtonStream
  def handle_exit(reason, state) do
    send(state.consumer, {state.ref, {:exit, reason}})
    {:stop, :normal, state}
  end

  @doc false
  def handle_stdin_refused(reason, message, state) do
    fail(state, "stdin data was refused (#{reason}): #{message}")
  end

  @doc false
  def handle_info({ref, :halt}, %{ref: ref} = state), do: {:stop, :normal, state}

  def handle_info({:DOWN, monitor, :process, _, _}, %{monitor: monitor} = state),
    do: {:stop, :normal, state}

  def handle_info({:EXIT, feeder, :normal}, %{feeder: feeder} = state), do: {:noreply, state}

  def handle_info({:EXIT, feeder, {:input_error, message}}, %{feeder: feeder} = state),
    do: fail(state, message)

  def handle_info({:EXIT, feeder, reason}, %{feeder: feeder} = state),
    do: fail(state, "the :input feeder failed: #{inspect(reason)}")

  def handle_info(_other, state), do: {:noreply, state}

  @doc false
  def handle_stdin_written(bytes, state) do
    state = %{state | in_flight: max(state.in_flight - bytes, 0)}

    case state.held do
      {from, data} ->
        if room?(state, data) do
          GenServer.reply(from, :ok)
          {:noreply, input(%{state | held: nil}, data)}
        else
          {:noreply, state}
        end

      nil ->
        {:noreply, state}
    end
  end

  @doc false
  def handle_call({:input, data}, from, state) do
    if room?(state, data),
      do: {:reply, :ok, input(state, data)},
      else: {:noreply, %{state | held: {from, data}}}
  end

  def handle_call(:input_done, _from, state) do
    send(self(), {self(), :eof})
    {:reply, :ok, state}
  end

  defp room?(%{in_flight: 0}, _data), do: true
  defp room?(state, data), do: state.in_flight + byte_size(data) <= state.max_in_flight

  # The server writes it to the program's stdin (ProtonStream.command/2's way).
  defp input(state, data) do
    send(self(), {self(), {:command, data}})
    %{state | in_flight: state.in_flight + byte_size(data)}
  end

  defp fail(state, message) do
    send(state.consumer, {state.ref, {:failed, "#{state.command}: #{message}"}})
    {:stop, :normal, state}
  end

  ## The feeder

  defp feed(server, input) do
    input
    |> input_chunks()
    |> Enum.each(&GenServer.call(server, {:input, &1}, :infinity))

    GenServer.call(server, :input_done, :infinity)
  catch
    # The server is gone (the program ended or the run was halted).
    :exit, {_, {GenServer, :call, _}} ->
      :ok

    kind, reason ->
      exit({:input_error, "reading :input failed: " <> Exception.format_banner(kind, reason)})
  end

  defp input_chunks(input) when is_binary(input), do: split(input)

  defp input_chunks(input) when is_list(input) do
    case iodata(input) do
      {:ok, binary} -> split(binary)
      :error -> Stream.flat_map(input, &element_chunks/1)
    end
  end

  defp input_chunks(input), do: Stream.flat_map(input, &element_chunks/1)

  defp element_chunks(element) when is_binary(element), do: split(element)

  defp element_chunks(element) do
    case iodata(element) do
      {:ok, binary} ->
        split(binary)

      :error ->
        raise ArgumentError,
              "every element of :input must be a binary or iodata, got: #{inspect(element)}"
    end
  end

  defp iodata(data) do
    {:ok, IO.iodata_to_binary(data)}
  rescue
    ArgumentError -> :error
  end

  defp split(<<chunk::binary-size(@input_chunk), rest::binary>>), do: [chunk | split(rest)]
  defp split(""), do: []
  defp split(rest), do: [rest]

  @doc """
  Splits `opts` into the run's own options (`:input`, `:stderr`) and the
  ProtonStream options; raises `ArgumentError` for a bad value.
  """
  @spec split_opts(keyword(), stderr_mode()) ::
          {nil | iodata() | Enumerable.t(), stderr_mode(), keyword()}
  def split_opts(opts, default_stderr) when is_list(opts) do
    {input, opts} = Keyword.pop(opts, :input)
    {stderr, opts} = Keyword.pop(opts, :stderr, default_stderr)

    if input != nil and
         not (is_binary(input) or is_list(input) or Enumerable.impl_for(input) != nil) do
      raise ArgumentError,
            "invalid option :input with value #{inspect(input)}: expected a binary, iodata or an Enumerable of binaries"
    end

    if stderr not in [:console, :log, :discard, :merge] do
      raise ArgumentError,
            "invalid option :stderr with value #{inspect(stderr)}: expected :console, :log, :discard or :merge"
    end

    {input, stderr, opts}
  end

  def split_opts(opts, _default) do
    raise ArgumentError, "options must be a keyword list, got: #{inspect(opts)}"
  end
end
