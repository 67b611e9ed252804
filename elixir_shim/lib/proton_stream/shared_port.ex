defmodule ProtonStream.SharedPort do
  @moduledoc """
  The VM's shared helper: one `ps_port --shared` port that runs every
  program opened without `isolated: true` or `:node`, and the process that
  owns it and routes its frames (docs/protocol.md, "Shared mode").

  Started by the `:proton_stream` application under its supervisor, and
  registered under this module's name. The port itself is opened at the
  first program, and opened again at once when it dies.

  You do not call this module directly; `ProtonStream.Transport.Shared` is
  its client, used by `ProtonStream.Server`. What it does for a program:

    * **Open**: the server calls `{:open, options, owner, hash, environ,
      counter}` (`counter` counts message mode's output bytes, for
      `ProtonStream.statistics/1`);
      the router picks the next id, sends `{:environ, env}` first when the
      VM's environment changed since the last one it sent (compared by hash,
      so `System.put_env/2` before an open is honoured by a ps_port started
      long ago; the opener reads the environment and makes the frame only
      when its hash differs from `environ_hash/0`), then `{:open, id, opts}`,
      and replies `{:ok, id, port, os_pid}` when `{:started, id, os_pid}` or
      an error when `{:spawn_error, ...}` arrives. It never blocks on an
      open: many are in flight at once.
    * **Output** (message mode): `{ps, {:data, _}}` / `{ps, {:error, _}}` go
      from here straight to the owner. What was passed on is acknowledged in
      batches: `{:ack, id, n}` goes to ps_port once at least half of the
      program's window has been passed on since the last one, so the
      program always has credit left and a stream of small chunks (a round
      trip through `cat`) costs no ack frame per chunk. Each frame costs a
      header match, a map lookup and a send: nothing in proportion to the
      number of programs.
    * **Output** (callback mode): the frame goes to the server as
      `{:"$ps_shared", id, event}`; the server acknowledges after its
      callback returned, writing to the port itself.
    * **Exit** (message mode): `{:EXIT, ps, reason}` is sent to the owner
      from here, after all output, then the server is told and stops.
    * **Owner or server gone**: both are monitored; the first `:DOWN` sends
      `{:stop, id}` at once, and later output of that program is dropped.
    * **ps_port gone** (killed, crashed): every owner gets
      `{:EXIT, ps, {:ps_port_exited, status}}` (callback mode:
      `handle_exit({:ps_port_exited, status}, state)`), `status` being the
      port's exit status (`137` for SIGKILL), and a new `ps_port --shared`
      is started at once. If this process itself dies, its port closes,
      ps_port takes every program down, and every server reports
      `{:ps_port_exited, {:shared_port_down, reason}}`.

  Stdin, `:eof`, signals and callback mode's acks are written to the port by
  the servers themselves (`Port.command/2` works from any process), so they
  never queue behind output here.
  """

  use GenServer
  require Logger

  alias ProtonStream.SharedFrames, as: Frames

  @max_id 2_147_483_647

  # One program on the port.
  #   ps       - its ProtonStream.Server
  #   owner    - message mode: the process output goes to; nil in callback mode
  #   state    - :starting | :running | :stopping (stop sent, output dropped)
  #              | :exited (exit seen, waiting for the server to end)
  #   from     - the open call to answer while :starting
  #   closed   - who gets {ps, :closed} once the server is down, or nil
  #   refs     - the monitors of ps and owner
  defmodule Child do
    @moduledoc false
    defstruct [
      :ps,
      :owner,
      :owner_ref,
      :ps_ref,
      :from,
      :closed,
      :command,
      :counter,
      :os_pid,
      :cgroup_path,
      # Message mode: an OOM notice is being logged; the exit waits for it.
      :held_exit,
      # Message mode: output passed on and not yet acknowledged, and the
      # amount that makes an ack (half the window).
      unacked: 0,
      ack_at: 1,
      oom_logging: false,
      state: :starting,
      stop_sent: false
    ]
  end

  # `served` says a program has started on the current port: only a port
  # that worked is replaced at once when it dies (a ps_port that cannot even
  # start a program would be restarted in a loop); otherwise the next open
  # starts a new one.
  defstruct port: nil, served: false, next_id: 1, environ_hash: nil, children: %{}, refs: %{}

  @doc "Starts the router (the `:proton_stream` application does)."
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts \\ []) do
    GenServer.start_link(__MODULE__, :ok, Keyword.put_new(opts, :name, __MODULE__))
  end

  @doc false
  def child_spec(opts) do
    %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}, shutdown: 5_000}
  end

  @doc """
  The hash of the environment last sent to the shared ps_port (what an
  opener compares its `:erlang.phash2(:os.getenv())` with, to send the
  environment only when it changed), or nil.
  """
  @spec environ_hash() :: integer() | nil
  def environ_hash, do: :persistent_term.get({__MODULE__, :environ_hash}, nil)

  @doc "The OS pid of the shared ps_port, or nil when none runs (for tests and the bench)."
  @spec os_pid() :: pos_integer() | nil
  def os_pid, do: GenServer.call(__MODULE__, :os_pid)

  ## Server

  @impl GenServer
  def init(:ok) do
    Process.flag(:trap_exit, true)
    # Many processes send here; keep their messages off this process's heap.
    Process.flag(:message_queue_data, :off_heap)
    {:ok, %__MODULE__{}}
  end

  @impl GenServer
  def handle_call({:open, options, owner, hash, environ, counter}, {ps, _} = from, state) do
    case ensure_port(state) do
      {:ok, state} ->
        child = %Child{
          ps: ps,
          owner: owner,
          from: from,
          command: options.command,
          counter: counter,
          cgroup_path: Map.get(options, :cgroup_path)
        }

        {:noreply, start_child(state, options, child, {hash, environ})}

      {:error, reason, state} ->
        {:reply, {:error, reason}, state}
    end
  end

  def handle_call(:os_pid, _from, %{port: nil} = state), do: {:reply, nil, state}

  def handle_call(:os_pid, _from, state) do
    case Port.info(state.port, :os_pid) do
      {:os_pid, pid} -> {:reply, pid, state}
      nil -> {:reply, nil, state}
    end
  end

  # From the program's server (ProtonStream.Transport.Shared): stop it; the
  # server ends right after, and `reply_to` gets {ps, :closed} at its :DOWN.
  # :gone when the program is not known here (the port died meanwhile): the
  # server then sends :closed itself.
  def handle_call({:close, id, reply_to}, {ps, _}, state) do
    case state.children do
      %{^id => %Child{ps: ^ps} = child} ->
        child = if is_pid(reply_to), do: %{child | closed: reply_to}, else: child
        {:reply, :ok, put_child(state, id, stop_child(state, id, child))}

      _ ->
        {:reply, :gone, state}
    end
  end

  # Output goes to the new owner from now on; {ps, :connected} follows what
  # the old one was sent.
  def handle_call({:connect, id, old_owner, new_owner}, {ps, _}, state) do
    case state.children do
      %{^id => %Child{ps: ^ps, owner: owner} = child} when owner != nil ->
        if child.owner_ref, do: Process.demonitor(child.owner_ref, [:flush])
        ref = Process.monitor(new_owner)
        refs = state.refs |> Map.delete(child.owner_ref) |> Map.put(ref, id)
        send(old_owner, {ps, :connected})

        {:reply, :ok,
         put_child(%{state | refs: refs}, id, %{child | owner: new_owner, owner_ref: ref})}

      _ ->
        {:reply, :gone, state}
    end
  end

  @impl GenServer
  def handle_info({port, {:data, frame}}, %{port: port} = state) do
    {:noreply, handle_frame(Frames.decode(frame), state)}
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    {:noreply, port_down(state, status)}
  end

  def handle_info({:EXIT, port, reason}, %{port: port} = state) do
    {:noreply, port_down(state, reason)}
  end

  def handle_info({:EXIT, _old_port, _reason}, state), do: {:noreply, state}

  # An OOM notice is logged: a held exit may go now.
  def handle_info({:oom_logged, id}, state) do
    case state.children do
      %{^id => %Child{held_exit: nil} = child} ->
        {:noreply, put_child(state, id, %{child | oom_logging: false})}

      %{^id => %Child{held_exit: reason} = child} ->
        {:noreply, exited(state, id, %{child | oom_logging: false, held_exit: nil}, reason)}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:DOWN, ref, :process, _pid, _reason}, state) do
    case Map.pop(state.refs, ref) do
      {nil, _} -> {:noreply, state}
      {id, refs} -> {:noreply, down(%{state | refs: refs}, id, ref)}
    end
  end

  def handle_info(msg, state) do
    Logger.warning("ProtonStream.SharedPort: unexpected message #{inspect(msg, limit: 10)}")
    {:noreply, state}
  end

  @impl GenServer
  def terminate(_reason, %{port: port}) when port != nil do
    # ps_port sees EOF and takes every program down.
    Port.close(port)
  rescue
    ArgumentError -> :ok
  end

  def terminate(_reason, _state), do: :ok

  ## Frames

  defp handle_frame({tag, id, data}, state) when tag in [:stdout, :stderr] do
    case state.children do
      %{^id => %Child{state: :running, owner: nil, ps: ps}} ->
        send(ps, {:"$ps_shared", id, {tag, data}})
        state

      %{^id => %Child{state: :running, owner: owner, ps: ps, counter: counter} = child} ->
        send(owner, {ps, {if(tag == :stdout, do: :data, else: :error), data}})
        :counters.add(counter, 1, byte_size(data))
        unacked = child.unacked + byte_size(data)

        # Acks in batches of half the window: the program keeps at least
        # half its window of credit, so it never waits for an ack held here.
        if unacked >= child.ack_at do
          send_frame(state.port, Frames.ack(id, unacked))
          put_child(state, id, %{child | unacked: 0})
        else
          put_child(state, id, %{child | unacked: unacked})
        end

      # Stopping: nobody wants it; the ack keeps a program that ignores
      # SIGTERM from blocking on a full window until its SIGKILL.
      %{^id => %Child{}} ->
        send_frame(state.port, Frames.ack(id, byte_size(data)))
        state

      _ ->
        state
    end
  end

  defp handle_frame({:started, id, os_pid}, state) do
    case state.children do
      %{^id => %Child{state: :starting} = child} ->
        GenServer.reply(child.from, {:ok, id, state.port, os_pid})
        # Stopped while starting (its owner or server went): output is dropped.
        running = if child.stop_sent, do: :stopping, else: :running
        child = %{child | state: running, from: nil, os_pid: os_pid}
        put_child(%{state | served: true}, id, child)

      _ ->
        state
    end
  end

  defp handle_frame({:spawn_error, id, reason, message}, state) do
    case Map.fetch(state.children, id) do
      {:ok, %Child{state: :starting} = child} ->
        GenServer.reply(child.from, {:error, {:spawn_error, reason, message}})
        forget(state, id, child)

      {:ok, child} ->
        forget(state, id, child)

      :error ->
        state
    end
  end

  defp handle_frame({:exit, id, status}, state) do
    case Map.fetch(state.children, id) do
      {:ok, child} -> exited(state, id, child, ProtonStream.Transport.exit_reason(status))
      :error -> state
    end
  end

  defp handle_frame({:oom_killed, id, count}, state) do
    case state.children do
      %{^id => %Child{owner: nil}} ->
        forward(state, id, {:oom_killed, count})

      # The owner hears it in order with the output. The notice is logged
      # by a process of its own (it reads the kernel log: no work for this
      # one), and the exit, which follows, waits for it (:held_exit).
      %{^id => %Child{state: :running, owner: owner, ps: ps} = child} ->
        send(owner, {ps, {:oom_killed, count}})
        router = self()

        spawn(fn ->
          ProtonStream.Server.log_oom(count, child.command, child.os_pid, child.cgroup_path)
          send(router, {:oom_logged, id})
        end)

        put_child(state, id, %{child | oom_logging: true})

      _ ->
        state
    end
  end

  # Stdin credit: only callback-mode servers open with stdin acks.
  defp handle_frame({:stdin_written, id, bytes}, state),
    do: forward(state, id, {:stdin_written, bytes})

  defp handle_frame({:error, id, reason, message}, state) when is_integer(id) do
    case state.children do
      %{^id => %Child{owner: nil}} ->
        forward(state, id, {:error, reason, message})

      %{^id => %Child{state: :running, owner: owner, ps: ps} = child} ->
        Logger.warning("ProtonStream: ps_port for #{child.command}: #{reason}: #{message}")

        # Refused stdin: the owner is told which data did not reach the program.
        if reason in [:stdin_overflow, :stdin_closed],
          do: send(owner, {ps, {:error, reason, message}})

      _ ->
        Logger.warning("ProtonStream: shared ps_port, program #{id}: #{reason}: #{message}")
    end

    state
  end

  defp handle_frame({:error, reason, message}, state) do
    Logger.error("ProtonStream: shared ps_port: #{reason}: #{message}")
    state
  end

  defp handle_frame(other, state) do
    Logger.warning("ProtonStream: unexpected frame from ps_port: #{inspect(other, limit: 20)}")
    state
  end

  # A callback-mode child's event goes to its server
  # (Transport.Shared.event/2); a message-mode child has none.
  defp forward(state, id, event) do
    case state.children do
      %{^id => %Child{owner: nil, ps: ps}} -> send(ps, {:"$ps_shared", id, event})
      _ -> :ok
    end

    state
  end

  # The program, its tree and its cgroup are gone; every byte it wrote has
  # been passed on. Message mode: the owner hears it from here, after the
  # output; the server is told and stops.
  defp exited(state, id, %Child{state: :starting} = child, reason) do
    GenServer.reply(
      child.from,
      {:error,
       {:spawn_error, :ps_port, "the program ended before it started (#{inspect(reason)})"}}
    )

    forget(state, id, child)
  end

  defp exited(state, id, %Child{state: :running, owner: nil} = child, reason) do
    send(child.ps, {:"$ps_shared", id, {:exit, reason}})
    mark_exited(state, id, child)
  end

  defp exited(state, id, %Child{state: :running, oom_logging: true} = child, reason),
    do: put_child(state, id, %{child | held_exit: reason})

  defp exited(state, id, %Child{state: :running} = child, reason) do
    send(child.owner, {:EXIT, child.ps, reason})
    send(child.ps, {:"$ps_shared", id, {:exit_sent, reason}})
    mark_exited(state, id, child)
  end

  defp exited(state, id, child, _reason), do: mark_exited(state, id, child)

  # The server may still be alive (it stops on our message, or it was
  # closing); keep the entry until its :DOWN, for {ps, :closed}.
  defp mark_exited(state, id, child) do
    if child.owner_ref, do: Process.demonitor(child.owner_ref, [:flush])
    refs = Map.delete(state.refs, child.owner_ref)

    if child.ps_ref == nil do
      forget(%{state | refs: refs}, id, child)
    else
      put_child(%{state | refs: refs}, id, %{child | state: :exited, owner_ref: nil})
    end
  end

  ## Monitors

  defp down(state, id, ref) do
    case Map.fetch(state.children, id) do
      {:ok, %Child{ps_ref: ^ref} = child} ->
        # The server is gone. {ps, :closed} is due now (after all output sent
        # before it), and the program must go if it still runs.
        if child.closed, do: send(child.closed, {child.ps, :closed})
        child = stop_child(state, id, %{child | ps_ref: nil, closed: nil})
        if child.state == :exited, do: forget(state, id, child), else: put_child(state, id, child)

      {:ok, %Child{owner_ref: ^ref} = child} ->
        # The owner is gone: stop the program at once (the server, linked to
        # the owner, stops too).
        put_child(state, id, stop_child(state, id, %{child | owner_ref: nil}))

      _ ->
        state
    end
  end

  defp stop_child(_state, _id, %Child{stop_sent: true} = child), do: child

  defp stop_child(state, id, %Child{state: s} = child) when s in [:starting, :running] do
    send_frame(state.port, Frames.stop(id))
    # From now on output is acked frame by frame; return what was held too.
    if child.unacked > 0, do: send_frame(state.port, Frames.ack(id, child.unacked))
    # A starting program keeps its state until :started (its opener waits).
    %{
      child
      | state: if(s == :starting, do: :starting, else: :stopping),
        stop_sent: true,
        unacked: 0
    }
  end

  defp stop_child(_state, _id, child), do: child

  # The port may be gone: its exit message is then on its way.
  defp send_frame(port, frame), do: ProtonStream.Port.send_frame(port, frame)

  defp forget(state, id, child) do
    for ref <- [child.ps_ref, child.owner_ref], ref != nil, do: Process.demonitor(ref, [:flush])
    refs = Map.drop(state.refs, [child.ps_ref, child.owner_ref])
    %{state | children: Map.delete(state.children, id), refs: refs}
  end

  defp put_child(state, id, child), do: %{state | children: Map.put(state.children, id, child)}

  ## Opening programs and the port

  defp start_child(state, options, %Child{ps: ps, owner: owner} = child, {hash, environ}) do
    id = state.next_id
    if hash != state.environ_hash, do: send_environ(state.port, hash, environ)
    # Every open frame carries the window, so what the router batches acks
    # against is what ps_port enforces, whatever ps_port's own default.
    options = Map.put_new(options, :stdio_window, ProtonStream.Transport.default_window())
    Port.command(state.port, Frames.open(id, options))

    ps_ref = Process.monitor(ps)
    owner_ref = if owner, do: Process.monitor(owner)
    refs = Map.put(state.refs, ps_ref, id)
    refs = if owner_ref, do: Map.put(refs, owner_ref, id), else: refs
    ack_at = ProtonStream.Transport.ack_at(options.stdio_window)
    child = %{child | ps_ref: ps_ref, owner_ref: owner_ref, ack_at: ack_at}

    %{
      state
      | next_id: if(id == @max_id, do: 1, else: id + 1),
        environ_hash: hash,
        refs: refs,
        children: Map.put(state.children, id, child)
    }
  rescue
    # The port died under us; its exit message follows and fails the
    # pending opens, this one included.
    ArgumentError ->
      GenServer.reply(child.from, {:error, port_error("the shared ps_port is gone")})
      state
  end

  # The opener sends the frame when its hash differs from the last one it
  # saw published; when another open changed it meanwhile, read it here.
  defp send_environ(port, hash, environ) do
    frame = environ || Frames.environ(:os.getenv())
    Port.command(port, frame)

    if hash != :persistent_term.get({__MODULE__, :environ_hash}, nil),
      do: :persistent_term.put({__MODULE__, :environ_hash}, hash)
  end

  defp ensure_port(%{port: nil} = state) do
    path = ProtonStream.Port.executable()

    if File.regular?(path) do
      port =
        Port.open({:spawn_executable, path}, [
          :binary,
          {:packet, 4},
          :exit_status,
          :use_stdio,
          args: ["--shared"]
        ])

      # A new ps_port starts from its own environment: send the VM's at the
      # next open.
      :persistent_term.erase({__MODULE__, :environ_hash})
      {:ok, %{state | port: port, served: false, environ_hash: nil}}
    else
      {:error,
       {:spawn_error, :enoent,
        "the ps_port helper is missing at #{path}; proton_stream's :ps_port compiler builds it " <>
          "(needs Go on PATH when proton_stream is compiled)"}, state}
    end
  rescue
    e in ErlangError ->
      {:error, port_error("could not open a port for ps_port: #{Exception.message(e)}"), state}
  end

  defp ensure_port(state), do: {:ok, state}

  defp port_error(message), do: {:spawn_error, :ps_port, message}

  # ps_port died: everyone with a program on it is told, and a new one is
  # started at once (it also sweeps what the dead one may have left).
  defp port_down(state, status) do
    Logger.error(
      "ProtonStream: the shared ps_port exited (#{inspect(status)}) with " <>
        "#{map_size(state.children)} program(s) on it; each owner gets " <>
        "{:ps_port_exited, #{inspect(status)}}" <>
        if(state.served, do: "; a new ps_port is started", else: "")
    )

    reason = {:ps_port_exited, status}

    state =
      Enum.reduce(state.children, %{state | port: nil}, fn {id, child}, acc ->
        notify_port_down(child, id, reason)

        # A closing program's {ps, :closed} still waits for its server's end.
        if child.closed != nil and child.ps_ref != nil,
          do: put_child(acc, id, %{child | state: :exited}),
          else: forget(acc, id, child)
      end)

    if state.served, do: restart_port(state), else: state
  end

  defp restart_port(state) do
    case ensure_port(state) do
      {:ok, state} ->
        state

      {:error, reason, state} ->
        Logger.error("ProtonStream: could not start a new shared ps_port: #{inspect(reason)}")
        state
    end
  end

  defp notify_port_down(%Child{state: :starting, from: from}, _id, {_, status}) do
    GenServer.reply(
      from,
      {:error,
       port_error(
         "the shared ps_port exited (#{inspect(status)}) before starting the program (see its stderr)"
       )}
    )
  end

  defp notify_port_down(%Child{state: :running, owner: nil, ps: ps}, id, reason),
    do: send(ps, {:"$ps_shared", id, {:exit, reason}})

  defp notify_port_down(%Child{state: :running, owner: owner, ps: ps}, id, reason) do
    send(owner, {:EXIT, ps, reason})
    send(ps, {:"$ps_shared", id, {:exit_sent, reason}})
  end

  defp notify_port_down(_child, _id, _reason), do: :ok
end
