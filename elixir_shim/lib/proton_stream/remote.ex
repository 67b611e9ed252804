defmodule ProtonStream.Remote do
  @moduledoc """
  Node mode: programs run by a ps_port node (see `ProtonStream.Node` and
  `docs/node.md` in the repository), reached over Erlang distribution.

  You do not call this module directly: `ProtonStream.open/3` and
  `ProtonStream.start_link/5` use it when given `node: node`. It

    * turns validated options (`ProtonStream.Options`) into the open request
      the node documents and maps the node's errors onto port mode's;
    * keeps, for every program opened in message mode, a small local watcher
      that monitors the node's pid: when the connection to the node is lost
      before the program's exit was reported, the owner gets
      `{:EXIT, ps, {:ps_port_exited, :noconnection}}`, as it would get
      `{:ps_port_exited, status}` from a helper that died in port mode. The
      watcher follows ownership moved with `ProtonStream.connect/2`;
    * sends stdin data as one binary per command, so the node takes it or
      refuses it whole (a ps_port node refuses a message over its
      `--max-request`, 16 MiB by default, with `{pid, {:error, :too_large,
      text}}`, and weighs the elements of lists as decoded, 16 bytes each:
      iodata is made a binary first).
  """

  @open_timeout 15_000
  # Every mode's default stdin limit (host.DefaultStdinLimit), asked for
  # explicitly so an older node's smaller default does not apply.
  @default_stdin_limit ProtonStream.Limits.fetch!(:stdin_limit_default)
  @registry ProtonStream.Registry

  @doc """
  Opens a program on `options.node` for `owner`. Returns `{:ok, pid}` (the
  node's pid for the program), `{:error, {:spawn_error, reason, message}}`,
  or `{:not_found, message}` when the node found no such program on its
  `PATH` (port mode raises `ErlangError` `:enoent` for that).
  """
  @spec open(ProtonStream.Options.t(), pid()) ::
          {:ok, pid()} | {:error, {:spawn_error, atom(), binary()}} | {:not_found, binary()}
  def open(%{node: node} = options, owner) do
    if Node.alive?() do
      case call_open(node, {:open, options.command, options.args, node_opts(options), owner}) do
        {:error, {:spawn_error, _, _} = error} ->
          {:error,
           ProtonStream.SpawnErrors.explain_remote(error, node, options.command, options.args)}

        result ->
          result
      end
    else
      {:error,
       {:spawn_error, :not_distributed,
        "cannot reach ps_port node #{node}: this VM is not distributed " <>
          "(start it with --name or --sname, or see ProtonStream.Node's :start_distribution)"}}
    end
  end

  defp call_open(node, request) do
    case quick_call(node, request) do
      :no -> monitored_call(node, request)
      {:reply, reply} -> open_reply(reply, node)
      {:error, reason} -> {:error, call_error(reason, node)}
    end
  end

  defp open_reply({:ok, pid}, _node) when is_pid(pid), do: {:ok, pid}
  defp open_reply({:error, reason}, node), do: open_error(reason, node)

  defp open_reply(other, node),
    do: {:error, {:spawn_error, :badreply, "#{node} answered #{inspect(other)}"}}

  # The first open over a connection to the node is a GenServer.call: its
  # monitor of {:proton_stream, node} tells a node without that process
  # (:noproc) from one that does not answer. Once that process has answered
  # on this connection, it is known to be there for as long as the
  # connection lasts (a ps_port node's spawner never exits while the node
  # runs), and quick_call/2 asks without the monitor.
  defp monitored_call(node, request) do
    reply = GenServer.call({:proton_stream, node}, request, @open_timeout)
    remember_connection(node)
    open_reply(reply, node)
  catch
    :exit, {reason, {GenServer, :call, _}} -> {:error, call_error(reason, node)}
  end

  # A call without a process monitor: GenServer.call's monitor is two more
  # distribution messages per open (MONITOR_P, DEMONITOR_P) that the node
  # handles in order before the request, so the request could not be taken
  # on the connection's reader (docs/benchmarks.md, "Spawn"). A lost
  # connection still ends the wait ({:nodedown, node} from monitor_node/2,
  # which sends nothing to the node). The tag is a plain reference, and only
  # one of 3 words (ergo, which the node runs on, keeps no more of a
  # reference it did not see in a monitor; OTP 26+ make longer ones for
  # aliases). :no: this connection has not been seen to answer yet.
  defp quick_call(node, request) do
    ref = make_ref()

    if short_ref?(ref) and known_connection?(node) do
      true = :erlang.monitor_node(node, true)
      send({:proton_stream, node}, {:"$gen_call", {self(), ref}, request})

      receive do
        {^ref, reply} ->
          forget_nodedown(node)
          {:reply, reply}

        {:nodedown, ^node} ->
          {:error, {:nodedown, node}}
      after
        @open_timeout ->
          forget_nodedown(node)
          {:error, :timeout}
      end
    else
      :no
    end
  end

  defp short_ref?(ref), do: match?(<<131, 90, 0, 3, _::binary>>, :erlang.term_to_binary(ref))

  defp forget_nodedown(node) do
    :erlang.monitor_node(node, false)

    receive do
      {:nodedown, ^node} -> :ok
    after
      0 -> :ok
    end
  end

  defp known_connection?(node) do
    case connection_id(node) do
      nil -> false
      id -> :persistent_term.get({__MODULE__, :answered, node}, nil) == id
    end
  end

  # Written once per connection (a persistent_term update costs a global
  # scan; a new connection to the same node is rare).
  defp remember_connection(node) do
    case connection_id(node) do
      nil ->
        :ok

      id ->
        key = {__MODULE__, :answered, node}
        if :persistent_term.get(key, nil) != id, do: :persistent_term.put(key, id)
        :ok
    end
  end

  defp connection_id(node) do
    Enum.find_value(:erlang.nodes(:connected, %{connection_id: true}), fn
      {^node, %{connection_id: id}} -> id
      _ -> nil
    end)
  end

  defp call_error({:nodedown, _}, node) do
    {:spawn_error, :nodedown,
     "cannot connect to ps_port node #{node} (is it running, reachable, and does it have this VM's cookie?)"}
  end

  defp call_error(:noproc, node) do
    {:spawn_error, :noproc, "#{node} runs no :proton_stream process: is it a ps_port node?"}
  end

  defp call_error(:timeout, node) do
    {:spawn_error, :timeout, "ps_port node #{node} did not answer within #{@open_timeout} ms"}
  end

  defp call_error(other, node) do
    {:spawn_error, :nodedown, "calling ps_port node #{node} failed: #{inspect(other)}"}
  end

  # The options as docs/node.md takes them. :cgroup_base was turned into a
  # random :cgroup_path by ProtonStream.Options (as in port mode); the node
  # puts it under its --cgroup-base.
  defp node_opts(options) do
    options
    |> Map.drop([:command, :args, :node, :cgroup_base, :cgroup, :pty, :pty_size])
    |> Map.put_new(:stdin_limit, @default_stdin_limit)
    |> Map.update(:env, [], &env_binaries/1)
  end

  # Names and values go as binaries: the node weighs a request as decoded
  # (--max-request), and a charlist costs a list cell per byte there, so a
  # 3 MiB environment sent as charlists weighed 54 MB and was refused as
  # :too_large instead of reaching exec.
  defp env_binaries(env) do
    Enum.map(env, fn {name, value} -> {List.to_string(name), value && List.to_string(value)} end)
  end

  defp open_error({:enoent, message}, _node) when is_binary(message) do
    # The node resolves the command; "not found in PATH" is that lookup
    # failing. Other ENOENTs (a missing cd or interpreter, an absolute path
    # that does not exist) are spawn errors, as in port mode; the node's
    # message for a missing cd starts "working directory (cd) \"DIR\"".
    if String.contains?(message, "not found in PATH"),
      do: {:not_found, message},
      else: {:error, {:spawn_error, :enoent, message}}
  end

  defp open_error({:not_allowed, path}, node) do
    {:error,
     {:spawn_error, :not_allowed,
      "#{path} is not allowed on #{node}: none of the node's --allow patterns matches it"}}
  end

  defp open_error({:badarg, option, why}, node) do
    {:error, {:spawn_error, :badarg, "#{node} refused option #{inspect(option)}: #{why}"}}
  end

  defp open_error({:too_many_children, max}, node) do
    {:error,
     {:spawn_error, :too_many_children,
      "#{node} already runs its maximum of #{max} programs (--max-children)"}}
  end

  defp open_error(:shutting_down, node) do
    {:error, {:spawn_error, :shutting_down, "ps_port node #{node} is shutting down"}}
  end

  defp open_error({reason, message}, _node) when is_atom(reason) and is_binary(message) do
    {:error, {:spawn_error, reason, message}}
  end

  defp open_error(other, node) do
    {:error, {:spawn_error, :node_error, "#{node} refused the program: #{inspect(other)}"}}
  end

  @doc """
  Message mode: opens the program for `owner` and starts its watcher.
  """
  @spec open_owned(ProtonStream.Options.t(), pid()) ::
          {:ok, pid()} | {:error, {:spawn_error, atom(), binary()}} | {:not_found, binary()}
  def open_owned(options, owner) do
    with {:ok, pid} <- open(options, owner) do
      watch(pid, owner)
      {:ok, pid}
    end
  end

  # The watcher monitors the node's pid only. The node itself monitors the
  # owner and ends the program when the owner goes; the pid then ends too,
  # and so does the watcher. A pid that ends sends {:EXIT, pid, reason} to
  # its owner first, so only a lost connection (:noconnection) is news.
  defp watch(remote, owner) do
    ref = make_ref()
    parent = self()

    watcher =
      spawn(fn ->
        if Process.whereis(@registry), do: Registry.register(@registry, remote, nil)
        monitor = Process.monitor(remote)
        send(parent, {ref, :watching})
        watch_loop(remote, monitor, owner)
      end)

    # Registered before open/3 returns, so connect/2 always finds it.
    receive do
      {^ref, :watching} -> watcher
    end
  end

  defp watch_loop(remote, monitor, owner) do
    receive do
      {:"$proton_stream_owner", ^remote, new_owner} ->
        watch_loop(remote, monitor, new_owner)

      {:DOWN, ^monitor, :process, _, :noconnection} ->
        send(owner, {:EXIT, remote, {:ps_port_exited, :noconnection}})

      {:DOWN, ^monitor, :process, _, _reason} ->
        :ok
    end
  end

  @doc "Tells the watcher of `remote` (if any) that `new_owner` owns it now."
  @spec owner_changed(pid(), pid()) :: :ok
  def owner_changed(remote, new_owner) do
    if Process.whereis(@registry) do
      for {watcher, _} <- Registry.lookup(@registry, remote),
          do: send(watcher, {:"$proton_stream_owner", remote, new_owner})
    end

    :ok
  end

  @doc """
  Sends `data` to `remote` (any process `send/2` takes) as one
  `{sender, {:command, binary}}` message, so the node accepts or refuses it
  whole (iodata is made a binary first: the node weighs list elements as
  decoded). Raises `ArgumentError` when `data` is not iodata.
  """
  @spec command(pid() | atom() | {atom(), node()}, pid(), iodata()) :: :ok
  def command(remote, sender, data) when is_binary(data) do
    send(remote, {sender, {:command, data}})
    :ok
  end

  def command(remote, sender, data), do: command(remote, sender, IO.iodata_to_binary(data))

  @doc "True for a pid on another node (a ps_port node's pid, in node mode)."
  defguard remote?(server) when is_pid(server) and node(server) != node()
end
