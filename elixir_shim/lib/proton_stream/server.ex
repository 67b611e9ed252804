defmodule ProtonStream.Server do
  @moduledoc """
  The GenServer behind every `ProtonStream` process: it owns the `ps_port` port
  and turns its frames into messages (message mode, `ProtonStream.open/3`) or
  callback calls (callback mode, `ProtonStream.start_link/5`). In callback
  mode with `node: node` it owns the program's pid on that ps_port node
  instead of a port (opened with `flow: :ack`, so the callbacks' speed
  bounds the data in flight), and turns that pid's messages into callback
  calls.

  You do not call this module directly; see `ProtonStream` for the contract.

  Internals worth knowing:

    * `init/1` waits for ps_port's first frame, so a started server always has
      a running child and `ProtonStream.os_pid/1` its real pid; a child that
      cannot be started makes the start return
      `{:error, {:spawn_error, reason, message}}`.
    * The server traps exits. In message mode it links to the owner only once
      the child runs, and stops when the owner dies (reason `:normal`, or
      `{:shutdown, {:owner_exited, reason}}` so nothing more is logged).
      `terminate/2` closes the port without waiting: ps_port sees EOF and
      takes the child's process tree down on its own (SIGTERM, then SIGKILL
      after `:delay_to_sigkill`), so a stopping server never blocks on it.
    * Every output frame is acknowledged (`{:ack, n}`) right after it was sent
      to the owner or after the callback returned.
    * ps_port removes the child's cgroup before it sends the exit frame, so
      the exit is reported as soon as that frame arrives (and the port is
      closed then, which lets ps_port exit).
    * In node mode the server monitors the node's pid; if it goes away
      without reporting the program's exit (the connection was lost), the
      exit reason is `{:ps_port_exited, reason}`.
  """

  use GenServer
  require Logger

  alias ProtonStream.Port, as: PsPort
  alias ProtonStream.Remote

  # How long init/1 may take to hear from ps_port.
  @start_timeout 15_000

  @gen_server_opts [:name, :timeout, :debug, :spawn_opt, :hibernate_after]

  # Headers of ps_port's {:started, _} and {:spawn_error, _, _} frames (atoms
  # as SMALL_ATOM_UTF8_EXT, docs/protocol.md).
  @started_header <<131, 104, 2, 119, 7, "started">>
  @spawn_error_header <<131, 104, 3, 119, 11, "spawn_error">>

  defstruct [
    :port,
    :remote,
    :remote_ref,
    :os_pid,
    :owner,
    :module,
    :mod_state,
    :command,
    :cgroup_path,
    port_open: true,
    oom_kills: 0,
    output_bytes: 0
  ]

  # `port` (port mode) or `remote` (node mode: the program's pid on the
  # node, monitored through `remote_ref`) is set, never both. `port_open`
  # says the program is still ours to stop.
  @typep t :: %__MODULE__{
           port: port() | nil,
           remote: pid() | nil,
           remote_ref: reference() | nil,
           os_pid: pos_integer() | nil,
           owner: pid() | nil,
           module: module() | nil,
           mod_state: term(),
           command: binary(),
           cgroup_path: binary() | nil,
           port_open: boolean(),
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
    options = ProtonStream.Options.validate(:stream, command, args, ps_opts)

    if Map.has_key?(options, :node) and Map.has_key?(options, :flow) do
      raise ArgumentError,
            "invalid option :flow: callback mode always uses flow: :ack (the callbacks acknowledge)"
    end

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

    case spawn_child(options) do
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
        case spawn_child(options) do
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
    if function_exported?(module, :init, 1) do
      case module.init(init_arg) do
        {:ok, mod_state} -> {:ok, mod_state, nil}
        {:ok, mod_state, extra} -> {:ok, mod_state, extra}
        :ignore -> :ignore
        {:stop, reason} -> {:stop, reason}
        other -> {:stop, {:bad_return_value, other}}
      end
    else
      {:ok, init_arg, nil}
    end
  end

  defp spawn_child(%{node: _} = options) do
    case Remote.open(Map.put(options, :flow, :ack), self()) do
      {:ok, remote} ->
        ref = Process.monitor(remote)

        # A program that ended at once has sent its {:EXIT, _, _} to us
        # before its pid died (the call then exits :noproc or :normal); that exit is
        # reported from the mailbox as usual, and os_pid stays nil.
        case remote_os_pid(remote) do
          {:ok, os_pid} ->
            {:ok,
             %__MODULE__{
               remote: remote,
               remote_ref: ref,
               os_pid: os_pid,
               command: options.command,
               cgroup_path: Map.get(options, :cgroup_path)
             }}

          {:error, reason} ->
            send(remote, {self(), :close})
            {:error, {:spawn_error, :nodedown, "lost the program on #{options.node}: #{reason}"}}
        end

      {:not_found, message} ->
        {:error, {:"$proton_stream_not_found", message}}

      {:error, _} = error ->
        error
    end
  end

  defp spawn_child(options) do
    case open_port(options) do
      {:ok, port} ->
        case await_started(port, options) do
          # The words ps_port cannot know: what is wrong with the file.
          {:error, {:spawn_error, _, _} = error} ->
            {:error, ProtonStream.SpawnErrors.explain(error, options.command, options.args)}

          result ->
            result
        end

      error ->
        error
    end
  end

  defp remote_os_pid(remote) do
    {:ok, GenServer.call(remote, :"$os_pid", @start_timeout)}
  catch
    :exit, {reason, _} when reason in [:noproc, :normal] -> {:ok, nil}
    :exit, {reason, _} -> {:error, inspect(reason)}
  end

  defp open_port(options) do
    path = PsPort.executable()

    with true <- File.regular?(path),
         :ok <- ProtonStream.SpawnErrors.check_size([path | PsPort.args(options)], options) do
      {:ok, PsPort.open(options)}
    else
      {:error, _} = too_big ->
        too_big

      false ->
        {:error,
         {:spawn_error, :enoent,
          "the ps_port helper is missing at #{path}; proton_stream's :ps_port compiler builds it " <>
            "(needs Go on PATH when proton_stream is compiled)"}}
    end
  rescue
    e in ErlangError ->
      {:error,
       {:spawn_error, :ps_port, "could not open a port for ps_port: #{Exception.message(e)}"}}
  end

  # ps_port's first frame is {:started, os_pid} or {:spawn_error, ...}. The
  # receive is selective on their fixed headers anyway: should output ever
  # overtake :started, it stays in the mailbox, in order, for handle_info/2.
  defp await_started(port, options) do
    receive do
      {^port, {:data, <<@started_header::binary, _::binary>> = frame}} ->
        {:started, os_pid} = PsPort.decode(frame)

        {:ok,
         %__MODULE__{
           port: port,
           os_pid: os_pid,
           command: options.command,
           cgroup_path: Map.get(options, :cgroup_path)
         }}

      {^port, {:data, <<@spawn_error_header::binary, _::binary>> = frame}} ->
        {:spawn_error, reason, message} = PsPort.decode(frame)
        PsPort.close(port)
        {:error, {:spawn_error, reason, message}}

      {^port, {:exit_status, status}} ->
        {:error,
         {:spawn_error, :ps_port,
          "ps_port exited with status #{status} before starting the program (see its stderr)"}}
    end
  end

  ## Frames from ps_port

  @impl GenServer
  def handle_info({port, {:data, frame}}, %{port: port} = state) when port != nil do
    handle_frame(PsPort.decode(frame), state)
  end

  # ps_port died before reporting the program's exit.
  def handle_info({port, {:exit_status, status}}, %{port: port} = state) when port != nil do
    Logger.error(
      "ProtonStream: ps_port for #{state.command} exited with status #{status} " <>
        "without reporting the program's exit (see its stderr)"
    )

    finish({:ps_port_exited, status}, %{state | port_open: false})
  end

  def handle_info({:EXIT, port, _reason}, %{port: port} = state) when port != nil,
    do: {:noreply, state}

  ## Messages from the program's pid on a ps_port node (node mode)

  def handle_info({remote, message}, %{remote: remote} = state) when remote != nil do
    case message do
      {:data, data} when is_binary(data) -> handle_frame({:stdout, data}, state)
      {:error, data} when is_binary(data) -> handle_frame({:stderr, data}, state)
      {:error, reason, text} -> handle_frame({:error, reason, text}, state)
      {:oom_killed, count} -> handle_frame({:oom_killed, count}, state)
      # Replies to our :close (we are stopping anyway) and :connect (never sent).
      reply when reply in [:closed, :connected] -> {:noreply, state}
      other -> handle_frame(other, state)
    end
  end

  # The last message: the program and its tree are gone (and its cgroup).
  def handle_info({:EXIT, remote, reason}, %{remote: remote} = state) when remote != nil do
    Process.demonitor(state.remote_ref, [:flush])
    finish(reason, %{state | port_open: false})
  end

  def handle_info({:DOWN, ref, :process, _, reason}, %{remote_ref: ref} = state)
      when ref != nil do
    Logger.error(
      "ProtonStream: the ps_port node's process for #{state.command} went away " <>
        "(#{inspect(reason)}) without reporting the program's exit"
    )

    finish({:ps_port_exited, reason}, %{state | port_open: false})
  end

  ## Requests (message mode: from the owner only; callback mode: from anyone)

  def handle_info({from, request} = msg, state) when is_pid(from) do
    if request?(request) and (from == state.owner or state.module != nil) do
      handle_request(from, request, state)
    else
      other_message(msg, state)
    end
  end

  def handle_info(msg, state), do: other_message(msg, state)

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

  defp handle_request(_from, {:command, data}, %{remote: remote} = state) when remote != nil do
    case iodata_to_binary(data) do
      {:ok, bin} -> Remote.command(remote, self(), bin)
      :error -> Logger.error("ProtonStream: dropped {:command, data} whose data is not iodata")
    end

    {:noreply, state}
  end

  defp handle_request(_from, {:command, data}, state) do
    case iodata_to_binary(data) do
      {:ok, bin} ->
        PsPort.command(state.port, bin)

      :error ->
        Logger.error(
          "ProtonStream: dropped {:command, data} whose data is not iodata: #{inspect(data, limit: 10)}"
        )
    end

    {:noreply, state}
  end

  defp handle_request(_from, :eof, state) do
    if state.remote, do: send(state.remote, {self(), :eof}), else: PsPort.eof(state.port)
    {:noreply, state}
  end

  defp handle_request(_from, {:signal, signum}, state) do
    if signum in 1..64 do
      if state.remote,
        do: send(state.remote, {self(), {:signal, signum}}),
        else: PsPort.signal(state.port, signum)
    else
      Logger.error("ProtonStream: dropped {:signal, #{signum}}: signal numbers are 1..64")
    end

    {:noreply, state}
  end

  defp handle_request(from, :close, state) do
    close_child(state)
    notify_when_down(from, {self(), :closed})
    {:stop, :normal, %{state | port_open: false}}
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
    send(old_owner, {self(), :connected})
    {:noreply, %{state | owner: new_owner}}
  end

  # `{ps, :closed}` is sent once the server is gone, so a process that sees it
  # can rely on `Process.alive?(ps) == false`.
  defp notify_when_down(to, message) do
    server = self()

    spawn(fn ->
      ref = Process.monitor(server)

      receive do
        {:DOWN, ^ref, :process, _, _} -> send(to, message)
      end
    end)
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
    if function_exported?(module, :handle_info, 2) do
      wrap(module.handle_info(msg, state.mod_state), state)
    else
      Logger.warning(
        "ProtonStream: #{inspect(module)} received unexpected message: #{inspect(msg)}"
      )

      {:noreply, state}
    end
  end

  ## Frames

  defp handle_frame({:stdout, data}, %{module: nil} = state) do
    send(state.owner, {self(), {:data, data}})
    PsPort.ack(state.port, byte_size(data))
    {:noreply, %{state | output_bytes: state.output_bytes + byte_size(data)}}
  end

  defp handle_frame({:stderr, data}, %{module: nil} = state) do
    send(state.owner, {self(), {:error, data}})
    PsPort.ack(state.port, byte_size(data))
    {:noreply, %{state | output_bytes: state.output_bytes + byte_size(data)}}
  end

  defp handle_frame({:stdout, data}, state), do: output_callback(:handle_stdout, data, state)
  defp handle_frame({:stderr, data}, state), do: output_callback(:handle_stderr, data, state)

  # The last frame: the program, its process tree and its cgroup are gone.
  # ps_port lingers until the port is closed, then exits.
  defp handle_frame({:exit, status}, state) do
    PsPort.close(state.port)
    finish(exit_reason(status), %{state | port_open: false})
  end

  # Sent just before the exit frame. The kernel log names the processes the
  # OOM killer chose (the program, or one of its descendants); the owner
  # (message mode) is told first, as a ps_port node tells it.
  defp handle_frame({:oom_killed, count}, state) do
    if state.module == nil, do: send(state.owner, {self(), {:oom_killed, count}})

    Logger.warning(
      "ProtonStream: the kernel's OOM killer killed #{oom_victims(state, count)} " <>
        "(#{count} OOM kill(s) in cgroup #{state.cgroup_path}) while running #{state.command} " <>
        "(os pid #{state.os_pid})",
      oom_kills: count,
      os_pid: state.os_pid
    )

    {:noreply, %{state | oom_kills: count}}
  end

  # Refused stdin: the owner is told, as in node mode, so it knows which data
  # did not reach the program (a callback module has no owner: logged only).
  defp handle_frame({:error, reason, message}, %{module: nil} = state)
       when reason in [:stdin_overflow, :stdin_closed] do
    Logger.warning("ProtonStream: ps_port for #{state.command}: #{reason}: #{message}")
    send(state.owner, {self(), {:error, reason, message}})
    {:noreply, state}
  end

  # A callback module that exports handle_stdin_refused/3 (ProtonStream.Run,
  # behind cmd/3 and stream!/3) is told, so refused :input fails loudly.
  defp handle_frame({:error, reason, message}, %{module: module} = state)
       when reason in [:stdin_overflow, :stdin_closed] and module != nil do
    Logger.warning("ProtonStream: ps_port for #{state.command}: #{reason}: #{message}")

    if function_exported?(module, :handle_stdin_refused, 3),
      do: wrap(module.handle_stdin_refused(reason, message, state.mod_state), state),
      else: {:noreply, state}
  end

  defp handle_frame({:error, reason, message}, state) do
    Logger.warning("ProtonStream: ps_port for #{state.command}: #{reason}: #{message}")
    {:noreply, state}
  end

  defp handle_frame(other, state) do
    Logger.warning("ProtonStream: unexpected frame from ps_port: #{inspect(other, limit: 20)}")
    {:noreply, state}
  end

  defp oom_victims(%{cgroup_path: nil}, _count), do: "a process"

  defp oom_victims(state, count) do
    case Enum.take(ProtonStream.Cgroup.oom_victims(state.cgroup_path), -count) do
      [] ->
        "a process (the kernel log, which names it, could not be read)"

      victims ->
        Enum.map_join(victims, ", ", fn {pid, name} ->
          if pid == state.os_pid,
            do: "#{name} (os pid #{pid}, the program itself)",
            else: "#{name} (os pid #{pid})"
        end)
    end
  end

  defp output_callback(fun, data, %{module: module} = state) do
    state = %{state | output_bytes: state.output_bytes + byte_size(data)}

    result =
      if function_exported?(module, fun, 2) do
        apply(module, fun, [data, state.mod_state])
      else
        {:noreply, state.mod_state}
      end

    ack(state, byte_size(data))
    wrap(result, state)
  end

  defp ack(%{remote: nil, port: port}, bytes), do: PsPort.ack(port, bytes)
  defp ack(%{remote: remote}, bytes), do: send(remote, {self(), {:ack, bytes}})

  # Stops the program: a port close, or :close to the node's pid (the node
  # would also notice this server's end through its monitor).
  defp close_child(%{remote: nil, port: port}), do: PsPort.close(port)
  defp close_child(%{remote: remote}), do: send(remote, {self(), :close})

  defp exit_reason({:status, 0}), do: :normal
  defp exit_reason({:status, status}), do: {:exit_status, status}
  defp exit_reason({:signal, signum}), do: {:signal, signum}

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
    if function_exported?(module, :handle_exit, 2) do
      case module.handle_exit(reason, state.mod_state) do
        {:stop, stop_reason, mod_state} -> {:stop, stop_reason, %{state | mod_state: mod_state}}
        other -> {:stop, {:bad_return_value, other}, state}
      end
    else
      {:stop, reason, state}
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
    {:reply, %{cgroup_path: state.cgroup_path, output_byte_count: state.output_bytes}, state}
  end

  def handle_call(request, from, %{module: module} = state) when module != nil do
    if function_exported?(module, :handle_call, 3) do
      wrap(module.handle_call(request, from, state.mod_state), state)
    else
      {:stop, {:bad_call, request}, state}
    end
  end

  def handle_call(request, _from, state), do: {:stop, {:bad_call, request}, state}

  @impl GenServer
  def handle_cast(request, %{module: module} = state) when module != nil do
    if function_exported?(module, :handle_cast, 2) do
      wrap(module.handle_cast(request, state.mod_state), state)
    else
      {:stop, {:bad_cast, request}, state}
    end
  end

  def handle_cast(request, state), do: {:stop, {:bad_cast, request}, state}

  @impl GenServer
  def handle_continue(arg, %{module: module} = state) when module != nil do
    if function_exported?(module, :handle_continue, 2) do
      wrap(module.handle_continue(arg, state.mod_state), state)
    else
      {:stop, {:undef, {module, :handle_continue, [arg]}}, state}
    end
  end

  @impl GenServer
  def terminate(reason, state) do
    # Close first: ps_port starts taking the child down while the callback
    # module's terminate/2 runs.
    if state.port_open, do: close_child(state)

    if state.module != nil and function_exported?(state.module, :terminate, 2) do
      state.module.terminate(reason, state.mod_state)
    end

    :ok
  end

  @impl GenServer
  def code_change(old_vsn, %{module: module} = state, extra) when module != nil do
    if function_exported?(module, :code_change, 3) do
      case module.code_change(old_vsn, state.mod_state, extra) do
        {:ok, mod_state} -> {:ok, %{state | mod_state: mod_state}}
        error -> error
      end
    else
      {:ok, state}
    end
  end

  def code_change(_old_vsn, state, _extra), do: {:ok, state}

  @spec wrap(term(), t()) :: term()
  defp wrap({:noreply, s}, state), do: {:noreply, %{state | mod_state: s}}
  defp wrap({:noreply, s, extra}, state), do: {:noreply, %{state | mod_state: s}, extra}
  defp wrap({:reply, r, s}, state), do: {:reply, r, %{state | mod_state: s}}
  defp wrap({:reply, r, s, extra}, state), do: {:reply, r, %{state | mod_state: s}, extra}
  defp wrap({:stop, reason, s}, state), do: {:stop, reason, %{state | mod_state: s}}
  defp wrap({:stop, reason, r, s}, state), do: {:stop, reason, r, %{state | mod_state: s}}
  defp wrap(other, state), do: {:stop, {:bad_return_value, other}, state}
end
