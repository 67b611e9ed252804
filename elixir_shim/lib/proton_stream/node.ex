defmodule ProtonStream.Node do
  @moduledoc """
  Runs a ps_port node on this host, as a supervised port, for node mode
  (`ProtonStream.open(command, args, node: name)`).

      children = [
        {ProtonStream.Node, allow: ["/usr/bin/*"], server_name: MyApp.PsNode}
      ]

      Supervisor.start_link(children, strategy: :one_for_one)
      ps_node = ProtonStream.Node.name(MyApp.PsNode)
      {:ok, ps} = ProtonStream.open("uname", ["-a"], node: ps_node)

  `start_link/1` starts `ps_port node` (the `ProtonStream.muontrap_path/0`
  binary) as a port, hands it this VM's cookie through the `PS_PORT_COOKIE`
  environment variable (never on the command line, where `ps` would show
  it), waits until the node is up and connected to this VM, and only then
  returns. `name/1` is the node's name. When the process stops, the ps_port
  node gets SIGTERM, terminates every program it runs (each owner gets the
  program's remaining output and `{:EXIT, ps, reason}`) and exits; the stop
  waits for that, up to `:shutdown_timeout`. If this VM dies, or the port
  is closed some other way, ps_port sees the end of its stdin and does the
  same (`ps_port node --exit-on-eof`). If ps_port dies, the process
  stops with `{:ps_port_exited, status}` and its supervisor restarts it
  under the same name; the owners of programs on the old node get
  `{:EXIT, ps, {:ps_port_exited, :noconnection}}`.

  The VM must be distributed (started with `--name`/`--sname`, or
  `Node.start/2`). `start_distribution: true` starts distribution when it is
  not, as `proton_stream_<random>@127.0.0.1` (long names) after starting
  `epmd -daemon`; without that option a VM that is not distributed gets
  `{:error, {:not_distributed, message}}`, never a surprise.

  The ps_port node runs with this VM's user and environment. Its log lines
  (refused programs, messages it ignored) are logged here at `:info` (lines
  from the ergo library underneath at `:debug`).

  ## Options

    * `:allow` - list of glob patterns on the absolute path of the programs
      owners may run (`*` does not cross `/`), e.g. `["/usr/bin/*"]`; or
    * `allow_any: true` - allow every program. One of the two is required.
    * `:allow_env` - list of names (or globs, e.g. `"LD_*"`) of the dynamic
      loader's and libc's variables (`LD_PRELOAD`, `LD_LIBRARY_PATH`,
      `GCONV_PATH`, `MALLOC_*`, ...) that owners may set in `env:`; by
      default an open setting one is refused (docs/node.md, "Security model")
    * `:allow_uid`, `:allow_gid` - lists of users (groups) owners may run
      programs as, besides the node's own: names, numeric ids, or ranges
      `"LOW-HIGH"` (a range never includes 0: root only by name or 0).
      Default: only this VM's user. They apply to a node running as root;
      one running as another user can only run programs as itself
    * `:max_request` - largest request the node takes, in bytes (lists and
      tuples weighed as decoded; default 16 MiB, at most 128 MiB); a larger
      `open` gets `{:error, {:too_large, message}}`, a larger `{:command, _}`
      `{ps, {:error, :too_large, message}}`
    * `:name` - the node's name: an atom or string, `"NAME@HOST"` or just
      `"NAME"` (the host of this VM's node name is added). Default:
      `ps_<random>`; a child spec fixes it once, so a restarted node keeps it
    * `:cgroup_base` - cgroup path under which the node makes the programs'
      groups (the cgroup options of `ProtonStream.open/3` are relative to it);
      without it the node refuses cgroup options
    * `:max_children` - most programs at once (default: no limit)
    * `:port` - the distribution port to listen on (default: any free one,
      registered with epmd)
    * `:shutdown_timeout` - ms the node waits, when stopped, for owners to
      take its programs' last output (default 5000)
    * `:start_timeout` - ms to wait for the node to come up and connect
      (default 10000)
    * `:start_distribution` - `true` (or a node name atom for this VM) to
      start distribution when this VM is not distributed
    * `:tls` - run distribution over TLS: `[certfile: path, keyfile: path]`,
      the node's PEM certificate and unencrypted key, plus optionally
      `cacertfile: path`, a CA that must have signed every peer's
      certificate (mutual TLS). This VM must itself run OTP's TLS
      distribution (`-proto_dist inet_tls`, see "TLS" below); a VM that does
      not, or one that does without this option, gets `{:error, {:tls, message}}`
    * `:server_name` - register this process under that name
    * `:id` - the child spec id (default `ProtonStream.Node`)

  ## TLS

  A VM started with TLS distribution can only reach a ps_port node that
  speaks it too (`ps_port node --tls-cert --tls-key [--tls-ca]`):

      # elixir --erl "-proto_dist inet_tls -ssl_dist_optfile /etc/app/ssl_dist.conf" \\
      #        --name app@host -S mix run --no-halt
      {ProtonStream.Node,
       allow: ["/usr/bin/*"],
       tls: [certfile: "/etc/app/ps.pem", keyfile: "/etc/app/ps.key",
             cacertfile: "/etc/app/ca.pem"]}

  The ps_port node is this VM's TLS peer: with `cacertfile` it accepts only
  a VM whose certificate (the `client` part of the `ssl_dist_optfile`)
  that CA signed. docs/node.md ("TLS") has a complete `ssl_dist_optfile`.

  ## Errors

  `start_link/1` raises `ArgumentError` for bad options, and returns
  `{:error, reason}` with `reason`:

    * `{:not_distributed, message}` - see above
    * `{:distribution, reason}` - starting distribution failed
    * `{:ps_port_exited, status, output}` - ps_port stopped before it was up
      (e.g. the name is in use, or a bad `:cgroup_base`); `output` is what it
      printed
    * `{:timeout, message}` - not up and connected within `:start_timeout`
    * `{:enoent, message}` - the ps_port binary is missing
    * `{:tls, message}` - `:tls` given to a VM without TLS distribution, or
      missing in a VM with it
  """

  use GenServer
  require Logger

  defstruct [:port, :name, :os_pid, :shutdown_timeout]

  @doc """
  A child spec: the node's default random name is chosen here, so restarts
  by the supervisor keep it. `shutdown` leaves the node its
  `:shutdown_timeout` and a little more.
  """
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    opts = Keyword.put_new_lazy(opts, :name, &random_name/0)

    %{
      id: Keyword.get(opts, :id, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      shutdown: Keyword.get(opts, :shutdown_timeout, 5_000) + 2_000
    }
  end

  @doc """
  Starts a ps_port node linked to the caller and returns once it is
  connected. See the moduledoc for the options and errors.
  """
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    ProtonStream.Options.validate(:node, opts)
    opts = Keyword.put_new_lazy(opts, :name, &random_name/0)
    start_timeout = Keyword.get(opts, :start_timeout, 10_000)

    gen_opts =
      [timeout: start_timeout + 5_000] ++
        if name = opts[:server_name], do: [name: name], else: []

    GenServer.start_link(__MODULE__, opts, gen_opts)
  end

  @doc "The node name of the ps_port node run by `server`."
  @spec name(GenServer.server()) :: node()
  def name(server), do: GenServer.call(server, :name)

  @doc "The OS pid of the ps_port node run by `server`."
  @spec os_pid(GenServer.server()) :: pos_integer()
  def os_pid(server), do: GenServer.call(server, :os_pid)

  defp random_name, do: "ps_" <> Base.encode16(:rand.bytes(4), case: :lower)

  ## Server

  @impl GenServer
  def init(opts) do
    Process.flag(:trap_exit, true)

    with :ok <- check_tls(opts[:tls]),
         :ok <- ensure_distribution(opts[:start_distribution]),
         {:ok, executable} <- executable() do
      name = full_name(opts[:name])
      deadline = System.monotonic_time(:millisecond) + Keyword.get(opts, :start_timeout, 10_000)
      port = open_port(executable, name, opts)

      state = %__MODULE__{
        port: port,
        name: name,
        os_pid: port_os_pid(port),
        shutdown_timeout: Keyword.get(opts, :shutdown_timeout, 5_000)
      }

      case await_up(state, deadline, []) do
        :ok ->
          {:ok, state}

        {:error, {:ps_port_exited, _, _} = reason} ->
          {:stop, reason}

        {:error, reason} ->
          stop_node(state)
          {:stop, reason}
      end
    else
      {:error, reason} -> {:stop, reason}
    end
  end

  # Both ends of a distribution connection speak TLS, or neither does; the
  # VM's choice is fixed at boot (-proto_dist).
  defp check_tls(tls) do
    proto_dist =
      case :init.get_argument(:proto_dist) do
        {:ok, [[proto | _] | _]} -> List.to_string(proto)
        _ -> "inet_tcp"
      end

    vm_tls? = String.contains?(proto_dist, "tls")

    cond do
      vm_tls? and tls == nil ->
        {:error,
         {:tls,
          "this VM runs TLS distribution (-proto_dist #{proto_dist}), so the ps_port node must " <>
            "too: give ProtonStream.Node tls: [certfile: ..., keyfile: ...]"}}

      not vm_tls? and tls != nil ->
        {:error,
         {:tls,
          "tls: given, but this VM does not run TLS distribution (-proto_dist #{proto_dist}) and " <>
            "could not connect to a TLS ps_port node: start it with " <>
            "--erl \"-proto_dist inet_tls -ssl_dist_optfile FILE\" or drop the :tls option"}}

      true ->
        :ok
    end
  end

  defp ensure_distribution(start) do
    cond do
      Node.alive?() ->
        :ok

      start in [nil, false] ->
        {:error,
         {:not_distributed,
          "this VM is not distributed, so it cannot reach a ps_port node: start it with " <>
            "--name/--sname (or Node.start/2), or give ProtonStream.Node start_distribution: true"}}

      true ->
        start_distribution(start)
    end
  end

  defp start_distribution(start) do
    epmd =
      System.find_executable("epmd") ||
        Path.wildcard(Path.join(:code.root_dir(), "erts-*/bin/epmd")) |> List.first()

    if epmd, do: System.cmd(epmd, ["-daemon"], stderr_to_stdout: true)

    name =
      if start == true,
        do: :"proton_stream_#{Base.encode16(:rand.bytes(4), case: :lower)}@127.0.0.1",
        else: start

    [_, host] = String.split(Atom.to_string(name), "@", parts: 2)
    type = if String.contains?(host, "."), do: :longnames, else: :shortnames

    case Node.start(name, type) do
      {:ok, _} -> :ok
      {:error, {:already_started, _}} -> :ok
      {:error, reason} -> {:error, {:distribution, reason}}
    end
  end

  defp executable do
    path = ProtonStream.muontrap_path()

    if File.regular?(path),
      do: {:ok, path},
      else: {:error, {:enoent, "the ps_port binary is missing at #{path}"}}
  end

  defp full_name(name) do
    name = to_string(name)

    if String.contains?(name, "@") do
      String.to_atom(name)
    else
      [_, host] = String.split(Atom.to_string(node()), "@", parts: 2)
      String.to_atom(name <> "@" <> host)
    end
  end

  defp open_port(executable, name, opts) do
    # --exit-on-eof: the port's end of ps_port's stdin closes when the
    # port is closed or this VM dies (even SIGKILLed), and ps_port then
    # shuts down as on SIGTERM, taking every program down.
    args =
      ["node", "--name", Atom.to_string(name), "--exit-on-eof"] ++
        Enum.flat_map(Keyword.get(opts, :allow, []), &["--allow", &1]) ++
        if(opts[:allow_any], do: ["--allow-any"], else: []) ++
        Enum.flat_map(Keyword.get(opts, :allow_env, []), &["--allow-env", &1]) ++
        Enum.flat_map(Keyword.get(opts, :allow_uid, []), &["--allow-uid", to_string(&1)]) ++
        Enum.flat_map(Keyword.get(opts, :allow_gid, []), &["--allow-gid", to_string(&1)]) ++
        flag("--max-request", opts[:max_request]) ++
        flag("--cgroup-base", opts[:cgroup_base]) ++
        flag("--max-children", opts[:max_children]) ++
        flag("--port", opts[:port]) ++
        flag("--shutdown-timeout", opts[:shutdown_timeout]) ++
        tls_flags(opts[:tls])

    cookie = Atom.to_charlist(Node.get_cookie())

    Port.open({:spawn_executable, executable}, [
      :binary,
      :exit_status,
      :stderr_to_stdout,
      {:line, 4096},
      {:args, args},
      {:env, [{~c"PS_PORT_COOKIE", cookie}]}
    ])
  end

  defp tls_flags(nil), do: []

  defp tls_flags(tls) do
    flag("--tls-cert", tls[:certfile]) ++
      flag("--tls-key", tls[:keyfile]) ++ flag("--tls-ca", tls[:cacertfile])
  end

  defp flag(_flag, nil), do: []
  defp flag(flag, value), do: [flag, to_string(value)]

  defp port_os_pid(port) do
    case Port.info(port, :os_pid) do
      {:os_pid, pid} -> pid
      nil -> nil
    end
  end

  # ps_port prints "ps_port node: NAME is up" on stderr once it is
  # registered; then this VM connects to it.
  defp await_up(%{port: port, name: name} = state, deadline, output) do
    up = "#{name} is up"

    receive do
      {^port, {:data, {_, line}}} ->
        if String.ends_with?(line, up),
          do: connect(name, deadline),
          else: await_up(state, deadline, [line | output])

      {^port, {:exit_status, status}} ->
        {:error, {:ps_port_exited, status, output |> Enum.reverse() |> Enum.join("\n")}}
    after
      max(deadline - System.monotonic_time(:millisecond), 0) ->
        {:error,
         {:timeout,
          "ps_port node #{name} did not come up in time; it printed: " <>
            inspect(Enum.reverse(output))}}
    end
  end

  defp connect(name, deadline) do
    cond do
      Node.connect(name) == true ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        {:error,
         {:timeout,
          "ps_port node #{name} is up but this VM cannot connect to it " <>
            "(same cookie? does the host in its name resolve to this machine?)"}}

      true ->
        Process.sleep(20)
        connect(name, deadline)
    end
  end

  @impl GenServer
  def handle_call(:name, _from, state), do: {:reply, state.name, state}
  def handle_call(:os_pid, _from, state), do: {:reply, state.os_pid, state}

  @impl GenServer
  # ps_port's own lines start with "ps_port node: "; anything else is from
  # the ergo library underneath (e.g. a warning about every OTP connection).
  def handle_info({port, {:data, {_, line}}}, %{port: port} = state) do
    if String.starts_with?(line, "ps_port node: "),
      do: Logger.info(line, ps_port_node: state.name),
      else: Logger.debug(line, ps_port_node: state.name)

    {:noreply, state}
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    {:stop, {:ps_port_exited, status}, %{state | port: nil}}
  end

  # The parent's exit is handled by GenServer (terminate/2 runs: trap_exit).
  def handle_info(_msg, state), do: {:noreply, state}

  @impl GenServer
  def terminate(_reason, state) do
    stop_node(state)
    :ok
  end

  # SIGTERM makes ps_port terminate every program (their owners still get
  # the rest of the output and the exit) and exit. Closing the port would do
  # the same (--exit-on-eof), but the port would no longer say when ps_port
  # is done; the stop waits for that.
  defp stop_node(%{port: nil}), do: :ok

  defp stop_node(%{port: port, os_pid: os_pid} = state) do
    kill(os_pid, "-TERM")

    receive do
      {^port, {:exit_status, _}} -> :ok
    after
      state.shutdown_timeout + 1_000 ->
        Logger.warning("ps_port node #{state.name} did not stop on SIGTERM; killing it")
        kill(os_pid, "-KILL")
    end

    try do
      Port.close(port)
    rescue
      ArgumentError -> :ok
    end

    Node.disconnect(state.name)
    :ok
  end

  defp kill(nil, _signal), do: :ok

  defp kill(os_pid, signal) do
    System.cmd("kill", [signal, Integer.to_string(os_pid)], stderr_to_stdout: true)
    :ok
  end
end
