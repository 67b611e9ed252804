defmodule ProtonStream.Server do
  @moduledoc """
  The GenServer behind every local `ProtonStream` process: the `ps` a user
  holds. It runs the program through a transport (`ProtonStream.Transport`:
  the VM's shared ps_port by default, a ps_port of its own with
  `isolated: true`, or, in callback mode, a ps_port node with `node: node`)
  and turns the program's events into messages (message mode,
  `ProtonStream.open/3`) or callback calls (callback mode,
  `ProtonStream.start_link/5`).

  You do not call this module directly; see `ProtonStream` for the contract.

  Internals worth knowing:

    * `init/1` waits until the program runs, so a started server always has
      a running child and `ProtonStream.os_pid/1` its real pid; a child that
      cannot be started makes the start return
      `{:error, {:spawn_error, reason, message}}`.
    * The server traps exits. In message mode it links to the owner only once
      the child runs, and stops when the owner dies (reason `:normal`, or
      `{:shutdown, {:owner_exited, reason}}` so nothing more is logged).
      `terminate/2` stops the program without waiting (its tree goes down
      after SIGTERM, then SIGKILL after `:delay_to_sigkill`), so a stopping
      server never blocks on it.
    * Output is acknowledged once it was sent to the owner or the callback
      returned, in batches: the program is opened with an explicit window
      (`:stdio_window`, `ProtonStream.Transport.default_window/0` when not
      given) and the server acks once half of it has been passed on since
      the last ack, so a round trip of small chunks costs no ack per chunk
      and the program never waits for an ack held back (it keeps at least
      half its window of credit). Acks held back when the server stops are
      returned before it closes the program; after the exit there is
      nothing to return them to. With the shared port in message mode, the
      output does not pass through this process at all:
      `ProtonStream.SharedPort` sends it to the owner, acknowledges it (in
      the same batches), and sends `{:EXIT, ps, reason}` after it.
    * ps_port removes the child's cgroup before it reports the exit, so the
      exit is reported as soon as it arrives.
  """

  use GenServer
  require Logger

  alias ProtonStream.Transport

  # How long init/1 may take to hear from ps_port.
  @start_timeout 15_000

  @gen_server_opts [:name, :timeout, :debug, :spawn_opt, :hibernate_after]

  defstruct [
    :transport,
    :handle,
    :os_pid,
    :owner,
    :module,
    :mod_state,
    :command,
    :cgroup_path,
    port_open: true,
    unacked: 0,
    ack_at: 1,
    oom_kills: 0,
    output_bytes: 0
  ]

  # `port_open` says the program is still ours to stop. `unacked` is output
  # passed on and not acknowledged yet; an ack goes once it reaches `ack_at`
  # (half the program's window).
  @typep t :: %__MODULE__{
           transport: module(),
           handle: ProtonStream.Transport.handle(),
           os_pid: pos_integer() | nil,
           owner: pid() | nil,
           module: module() | nil,
           mod_state: term(),
           command: binary(),
           cgroup_path: binary() | nil,
           port_open: boolean(),
           unacked: non_neg_integer(),
           ack_at: pos_integer(),
           oom_kills: non_neg_integer(),
           output_bytes: non_neg_integer()
         }

  @doc """
  Starts a message-mode server for validated `options`, owned (and, once the
  child runs, linked to) `owner`.
  """
  @spec start_owned(ProtonStream.Options.t(), pid()) :: {:ok, pid()} | {:error, term()}
  def start_owned(options, owner) do
    GenServer.start(__MODULE__, {:owner, owner, options}, timeout: @start_timeout)
  end

  @doc """
  Starts a callback-mode server linked to the caller. `opts` may hold
  GenServer options (`:name`, `:timeout`, `:debug`, `:spawn_opt`,
  `:hibernate_after`) next to the ProtonStream options.
  """
  @spec start_callback(module(), binary(), [binary()], term(), keyword()) :: GenServer.on_start()
  def start_callback(module, command, args, init_arg, opts) do
    {gen_opts, ps_opts} = split_opts(opts)
    options = ProtonStream.Options.validate(:callback, command, args, ps_opts)
    gen_opts = Keyword.put_new(gen_opts, :timeout, @start_timeout)

    case GenServer.start_link(__MODULE__, {:callback, module, init_arg, options}, gen_opts) do
      # The node did not find the command: raise as port mode does.
      {:error, {:"$proton_stream_not_found", message}} ->
        ProtonStream.SpawnErrors.not_found!(message)

      other ->
        other
    end
  end

  defp split_opts(opts) when is_list(opts) do
    Enum.split_with(opts, &match?({key, _} when key in @gen_server_opts, &1))
  end

  defp split_opts(opts), do: {[], opts}

  ## Start

  @impl GenServer
  def init({:owner, owner, options}) do
    Process.flag(:trap_exit, true)

    case spawn_child(options, owner) do
      {:ok, state} ->
        Process.link(owner)
        {:ok, %{state | owner: owner}}

      {:error, reason} ->
        {:stop, reason}
    end
  end

  def init({:callback, module, init_arg, options}) do
    Process.flag(:trap_exit, true)
    Code.ensure_loaded(module)

    case callback_init(module, init_arg) do
      {:ok, mod_state, extra} ->
        case spawn_child(stdin_ack(options, module), nil) do
          {:ok, state} ->
            state = %{state | module: module, mod_state: mod_state}
            if extra == nil, do: {:ok, state}, else: {:ok, state, extra}

          {:error, reason} ->
            {:stop, reason}
        end

      other ->
        other
    end
  end

  defp callback_init(module, init_arg) do
    case optional(module, :init, [init_arg], fn -> {:ok, init_arg} end) do
      {:ok, mod_state} -> {:ok, mod_state, nil}
      {:ok, mod_state, extra} -> {:ok, mod_state, extra}
      :ignore -> :ignore
      {:stop, reason} -> {:stop, reason}
      other -> {:stop, {:bad_return_value, other}}
    end
  end

  # A callback module that takes stdin credit (ProtonStream.Run's :input
  # feeder) gets the program opened with stdin acks: {:stdin_written, n}
  # events as ps_port writes its stdin to the program (docs/protocol.md).
  defp stdin_ack(options, module) do
    if function_exported?(module, :handle_stdin_written, 2),
      do: Map.put(options, :stdin_ack, true),
      else: options
  end

  defp spawn_child(options, owner) do
    transport = Transport.for_options(options)
    # Explicit, so that the batches below match the window ps_port keeps.
    options = Map.put_new(options, :stdio_window, Transport.default_window())

    case transport.open(options, owner) do
      {:ok, handle, os_pid} ->
        {:ok,
         %__MODULE__{
           transport: transport,
           handle: handle,
           os_pid: os_pid,
           command: options.command,
           cgroup_path: Map.get(options, :cgroup_path),
           ack_at: Transport.ack_at(options.stdio_window)
         }}

      {:error, _} = error ->
        error
    end
  end

  ## Events from the transport

  @impl GenServer
  def handle_info(msg, state) do
    case state.transport.event(msg, state.handle) do
      {:event, event} -> handle_event(event, state)
      :ignore -> {:noreply, state}
      :unknown -> handle_message(msg, state)
    end
  end

  ## Requests (message mode: from the owner only; callback mode: from anyone)

  defp handle_message({from, request} = msg, state) when is_pid(from) do
    if request?(request) and (from == state.owner or state.module != nil) do
      handle_request(from, request, state)
    else
      other_message(msg, state)
    end
  end

  defp handle_message(msg, state), do: other_message(msg, state)

  defp request?({:command, _data}), do: true
  defp request?(:close), do: true
  defp request?(:eof), do: true
  defp request?({:signal, signum}), do: is_integer(signum)
  defp request?({:connect, new_owner}), do: is_pid(new_owner)
  defp request?({:ack, bytes}), do: is_integer(bytes)
  defp request?(_other), do: false

  # The server acknowledges output itself; ProtonStream.ack/2 is for node
  # mode's message-mode owners.
  defp handle_request(_from, {:ack, _bytes}, state), do: {:noreply, state}

  defp handle_request(_from, {:command, data}, state) do
    case iodata_to_binary(data) do
      {:ok, bin} ->
        case state.transport.command(state.handle, bin) do
          :ok -> {:noreply, state}
          {:error, reason, message} -> handle_event({:error, reason, message}, state)
        end

      :error ->
        Logger.error(
          "ProtonStream: dropped {:command, data} whose data is not iodata: #{inspect(data, limit: 10)}"
        )

        {:noreply, state}
    end
  end

  defp handle_request(_from, :eof, state) do
    state.transport.eof(state.handle)
    {:noreply, state}
  end

  defp handle_request(_from, {:signal, signum}, state) do
    if signum in 1..64 do
      state.transport.signal(state.handle, signum)
    else
      Logger.error("ProtonStream: dropped {:signal, #{signum}}: signal numbers are 1..64")
    end

    {:noreply, state}
  end

  defp handle_request(from, :close, state) do
    {:stop, :normal, close_program(state, from)}
  end

  # Upstream ignores :connect in callback mode; so do we.
  defp handle_request(_from, {:connect, _new_owner}, %{module: module} = state)
       when module != nil,
       do: {:noreply, state}

  defp handle_request(owner, {:connect, owner}, state) do
    send(owner, {self(), :connected})
    {:noreply, state}
  end

  defp handle_request(old_owner, {:connect, new_owner}, state) do
    Process.link(new_owner)
    Process.unlink(old_owner)
    Transport.connect(state.transport, state.handle, old_owner, new_owner)
    {:noreply, %{state | owner: new_owner}}
  end

  defp iodata_to_binary(data) when is_binary(data), do: {:ok, data}

  defp iodata_to_binary(data) do
    {:ok, IO.iodata_to_binary(data)}
  rescue
    ArgumentError -> :error
  end

  ## Other messages

  # The owner is gone: stop (terminate/2 closes the port). A crashed owner is
  # logged already, so the stop reason is a :shutdown one.
  defp other_message({:EXIT, owner, reason}, %{owner: owner} = state) when owner != nil do
    stop_reason = if reason == :normal, do: :normal, else: {:shutdown, {:owner_exited, reason}}
    {:stop, stop_reason, %{state | owner: nil}}
  end

  defp other_message(msg, %{module: nil} = state) do
    case msg do
      # A link left over from an owner handed over with :connect.
      {:EXIT, _pid, _reason} -> :ok
      _ -> Logger.warning("ProtonStream: unexpected message: #{inspect(msg)}")
    end

    {:noreply, state}
  end

  defp other_message(msg, %{module: module} = state) do
    module
    |> optional(:handle_info, [msg, state.mod_state], fn ->
      Logger.warning(
        "ProtonStream: #{inspect(module)} received unexpected message: #{inspect(msg)}"
      )

      {:noreply, state.mod_state}
    end)
    |> wrap(state)
  end

  ## Events

  # Message mode: pass output on, then acknowledge it.
  defp handle_event({:stdout, data}, %{module: nil} = state) do
    send(state.owner, {self(), {:data, data}})
    {:noreply, passed_on(data, state)}
  end

  defp handle_event({:stderr, data}, %{module: nil} = state) do
    send(state.owner, {self(), {:error, data}})
    {:noreply, passed_on(data, state)}
  end

  defp handle_event({:stdout, data}, state), do: output_callback(:handle_stdout, data, state)
  defp handle_event({:stderr, data}, state), do: output_callback(:handle_stderr, data, state)

  # The program, its process tree and its cgroup are gone (acks held back
  # have nobody to go to).
  defp handle_event({:exit, reason}, state),
    do: finish(reason, %{state | port_open: false, unacked: 0})

  # ... and the owner has already been told, after the output it was sent.
  defp handle_event({:exit_sent, _reason}, state) do
    if state.owner, do: Process.unlink(state.owner)
    {:stop, :normal, %{state | port_open: false}}
  end

  # Sent just before the exit. The kernel log names the processes the OOM
  # killer chose (the program, or one of its descendants); the owner
  # (message mode) is told first, as a ps_port node tells it. With the
  # shared ps_port in message mode, its router has told the owner already
  # ({:oom_killed_sent, count}), in order with the output.
  defp handle_event({:oom_killed, count}, state) do
    if state.module == nil, do: send(state.owner, {self(), {:oom_killed, count}})
    {:noreply, log_oom(count, state)}
  end

  # Refused stdin: the owner is told, as in node mode, so it knows which data
  # did not reach the program (a callback module has no owner: logged only).
  defp handle_event({:error, reason, message}, %{module: nil} = state)
       when reason in [:stdin_overflow, :stdin_closed] do
    Logger.warning("ProtonStream: ps_port for #{state.command}: #{reason}: #{message}")
    send(state.owner, {self(), {:error, reason, message}})
    {:noreply, state}
  end

  # A callback module that exports handle_stdin_refused/3 (ProtonStream.Run,
  # behind cmd/3 and stream!/3) is told, so refused :input fails loudly.
  defp handle_event({:error, reason, message}, %{module: module} = state)
       when reason in [:stdin_overflow, :stdin_closed] and module != nil do
    Logger.warning("ProtonStream: ps_port for #{state.command}: #{reason}: #{message}")

    module
    |> optional(:handle_stdin_refused, [reason, message, state.mod_state], fn ->
      {:noreply, state.mod_state}
    end)
    |> wrap(state)
  end

  # Stdin credit, only for a module that asked for it (stdin_ack/2).
  defp handle_event({:stdin_written, bytes}, %{module: module} = state) when module != nil,
    do: wrap(module.handle_stdin_written(bytes, state.mod_state), state)

  defp handle_event({:error, reason, message}, state) do
    Logger.warning("ProtonStream: ps_port for #{state.command}: #{reason}: #{message}")
    {:noreply, state}
  end

  defp handle_event(other, state) do
    Logger.warning("ProtonStream: unexpected frame from ps_port: #{inspect(other, limit: 20)}")
    {:noreply, state}
  end

  defp log_oom(count, state) do
    log_oom(count, state.command, state.os_pid, state.cgroup_path)
    %{state | oom_kills: count}
  end

  @doc false
  # Logs an OOM notice for `command`: which processes the kernel killed, as
  # its log names them (reads dmesg). Also used by ProtonStream.SharedPort.
  @spec log_oom(pos_integer(), binary(), pos_integer() | nil, binary() | nil) :: :ok
  def log_oom(count, command, os_pid, cgroup_path) do
    Logger.warning(
      "ProtonStream: the kernel's OOM killer killed #{oom_victims(cgroup_path, os_pid, count)} " <>
        "(#{count} OOM kill(s) in cgroup #{cgroup_path}) while running #{command} " <>
        "(os pid #{os_pid})",
      oom_kills: count,
      os_pid: os_pid
    )
  end

  defp oom_victims(nil, _os_pid, _count), do: "a process"

  defp oom_victims(cgroup_path, os_pid, count) do
    case Enum.take(ProtonStream.Cgroup.oom_victims(cgroup_path), -count) do
      [] ->
        "a process (the kernel log, which names it, could not be read)"

      victims ->
        Enum.map_join(victims, ", ", fn {pid, name} ->
          if pid == os_pid,
            do: "#{name} (os pid #{pid}, the program itself)",
            else: "#{name} (os pid #{pid})"
        end)
    end
  end

  defp output_callback(fun, data, %{module: module} = state) do
    result = optional(module, fun, [data, state.mod_state], fn -> {:noreply, state.mod_state} end)
    wrap(result, passed_on(data, state))
  end

  # `data` was passed on: counted, and acknowledged in batches of half the
  # window (see the moduledoc). Never more than was passed on is acked, so
  # the program never has more than its window out.
  defp passed_on(data, state) do
    bytes = byte_size(data)
    unacked = state.unacked + bytes
    state = %{state | output_bytes: state.output_bytes + bytes}

    if unacked >= state.ack_at do
      state.transport.ack(state.handle, unacked)
      %{state | unacked: 0}
    else
      %{state | unacked: unacked}
    end
  end

  # Everything the child wrote has been passed on; report the exit.
  defp finish(reason, %{module: nil, owner: owner} = state) do
    # Sent as a message, not through the link: an owner that does not trap
    # exits gets it as a message instead of being killed (as with
    # proton_stream). The unlink keeps a trapping owner from getting a second
    # {:EXIT, ps, :normal}.
    send(owner, {:EXIT, self(), reason})
    Process.unlink(owner)
    {:stop, :normal, state}
  end

  defp finish(reason, %{module: module} = state) do
    case optional(module, :handle_exit, [reason, state.mod_state], fn ->
           {:stop, reason, state.mod_state}
         end) do
      {:stop, stop_reason, mod_state} -> {:stop, stop_reason, %{state | mod_state: mod_state}}
      other -> {:stop, {:bad_return_value, other}, state}
    end
  end

  ## Calls, casts, continues, termination

  @impl GenServer
  # :"$os_pid" is what a ps_port node's pid answers too, so
  # ProtonStream.os_pid/1 asks every kind of server the same way.
  def handle_call(request, _from, state)
      when request in [:"$os_pid", {:"$proton_stream", :os_pid}] do
    {:reply, state.os_pid, state}
  end

  # ProtonStream.cgroup_path/1 and statistics/1.
  def handle_call({:"$proton_stream", :info}, _from, state) do
    bytes = state.output_bytes + Transport.output_bytes(state.transport, state.handle)
    {:reply, %{cgroup_path: state.cgroup_path, output_byte_count: bytes}, state}
  end

  def handle_call(request, from, %{module: module} = state) when module != nil do
    module
    |> optional(:handle_call, [request, from, state.mod_state], fn ->
      {:stop, {:bad_call, request}, state.mod_state}
    end)
    |> wrap(state)
  end

  def handle_call(request, _from, state), do: {:stop, {:bad_call, request}, state}

  @impl GenServer
  def handle_cast(request, %{module: module} = state) when module != nil do
    module
    |> optional(:handle_cast, [request, state.mod_state], fn ->
      {:stop, {:bad_cast, request}, state.mod_state}
    end)
    |> wrap(state)
  end

  def handle_cast(request, state), do: {:stop, {:bad_cast, request}, state}

  @impl GenServer
  def handle_continue(arg, %{module: module} = state) when module != nil do
    module
    |> optional(:handle_continue, [arg, state.mod_state], fn ->
      {:stop, {:undef, {module, :handle_continue, [arg]}}, state.mod_state}
    end)
    |> wrap(state)
  end

  @impl GenServer
  def terminate(reason, state) do
    # Close first: ps_port starts taking the child down while the callback
    # module's terminate/2 runs.
    if state.port_open, do: close_program(state, nil)

    if state.module != nil do
      optional(state.module, :terminate, [reason, state.mod_state], fn -> :ok end)
    end

    :ok
  end

  # Stops the program. Acks held back go first: a program that ignores
  # SIGTERM and still writes does not wait on them until its SIGKILL.
  defp close_program(state, reply_to) do
    if state.unacked > 0, do: state.transport.ack(state.handle, state.unacked)
    state.transport.close(state.handle, reply_to)
    %{state | port_open: false, unacked: 0}
  end

  @impl GenServer
  def code_change(old_vsn, %{module: module} = state, extra) when module != nil do
    case optional(module, :code_change, [old_vsn, state.mod_state, extra], fn ->
           {:ok, state.mod_state}
         end) do
      {:ok, mod_state} -> {:ok, %{state | mod_state: mod_state}}
      error -> error
    end
  end

  def code_change(_old_vsn, state, _extra), do: {:ok, state}

  # Every callback of ProtonStream's behaviour but handle_stdin_written/2
  # (called only for a module that exports it, stdin_ack/2) is optional:
  # calls `module`'s `fun` with `args`, or, when the module does not export
  # it, returns what `default` (the callback's default behaviour) returns.
  @spec optional(module(), atom(), [term()], (() -> term())) :: term()
  defp optional(module, fun, args, default) do
    if function_exported?(module, fun, length(args)),
      do: apply(module, fun, args),
      else: default.()
  end

  @spec wrap(term(), t()) :: term()
  defp wrap({:noreply, s}, state), do: {:noreply, %{state | mod_state: s}}
  defp wrap({:noreply, s, extra}, state), do: {:noreply, %{state | mod_state: s}, extra}
  defp wrap({:reply, r, s}, state), do: {:reply, r, %{state | mod_state: s}}
  defp wrap({:reply, r, s, extra}, state), do: {:reply, r, %{state | mod_state: s}, extra}
  defp wrap({:stop, reason, s}, state), do: {:stop, reason, %{state | mod_state: s}}
  defp wrap({:stop, reason, r, s}, state), do: {:stop, reason, r, %{state | mod_state: s}}
  defp wrap(other, state), do: {:stop, {:bad_return_value, other}, state}
end
