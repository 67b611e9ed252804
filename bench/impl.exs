# The four implementations every scenario runs, behind one small interface:
#
#   * :plain    - a plain `Port.open` of the program: the physical limit of
#     BEAM port I/O, and the baseline of every ratio
#   * :shared   - ProtonStream's default, through the public API
#     (`ProtonStream.open/3`) as users run it: the VM's one shared
#     `ps_port --shared` runs every program
#   * :isolated - `ProtonStream.open(cmd, args, isolated: true)`: a
#     `ps_port --packet` per program
#   * :node     - ps_port node mode: a `ps_port node` started by the bench,
#     opened with `GenServer.call({:proton_stream, node}, {:open, ...})`
#     (docs/node.md), or with `ProtonStream.open(..., node: node)` once the
#     shim takes that option
#
# Messages differ only in their shape: a plain port sends `{port, {:data, d}}`
# and `{port, {:exit_status, s}}`; the other two send `{h, {:data, d}}` and
# `{:EXIT, h, reason}`. The scenarios match on both shapes where they must.

defmodule Bench.Impl do
  @moduledoc false

  @impls [:plain, :shared, :isolated, :node]
  def all, do: @impls

  @doc "The implementations that run through ps_port (compared with :plain)."
  def helpers, do: @impls -- [:plain]

  def label(:plain), do: "plain Port"
  def label(:shared), do: "shared ps_port (default)"
  def label(:isolated), do: "isolated: true"
  def label(:node), do: "node mode"

  @doc "Opens `cmd` with `args`; the caller is the owner. Returns the handle."
  def open(impl, cmd, args, opts \\ [])

  def open(:plain, cmd, args, _opts) do
    Port.open({:spawn_executable, exe(cmd)}, [:binary, :exit_status, :use_stdio, args: args])
  end

  def open(local, cmd, args, opts) when local in [:shared, :isolated] do
    opts = if local == :isolated, do: [{:isolated, true} | opts], else: opts

    case ProtonStream.open(cmd, args, opts) do
      {:ok, ps} -> ps
      other -> raise "ProtonStream.open(#{inspect(cmd)}) failed: #{inspect(other)}"
    end
  end

  def open(:node, cmd, args, opts) do
    node = Bench.Node.name()

    result =
      if Bench.Node.shim_option?() do
        ProtonStream.open(cmd, args, [{:node, node} | opts])
      else
        GenServer.call(
          {:proton_stream, node},
          {:open, cmd, args, Map.new(opts), self()},
          30_000
        )
      end

    case result do
      {:ok, pid} -> pid
      other -> raise "node open of #{inspect(cmd)} failed: #{inspect(other)}"
    end
  end

  @doc "Writes `data` to the child's stdin."
  def command(:plain, port, data), do: Port.command(port, data)
  def command(_impl, h, data), do: send(h, {self(), {:command, data}})

  @doc "The child's OS pid."
  def os_pid(:plain, port) do
    {:os_pid, pid} = Port.info(port, :os_pid)
    pid
  end

  def os_pid(local, ps) when local in [:shared, :isolated], do: ProtonStream.os_pid(ps)
  def os_pid(:node, pid), do: GenServer.call(pid, :"$os_pid", 10_000)

  @doc "Stops the child (plain: close the port and kill the program)."
  def close(:plain, port) do
    os = os_pid(:plain, port)
    Port.close(port)
    System.cmd("kill", ["-KILL", Integer.to_string(os)], stderr_to_stdout: true)
    :ok
  end

  def close(_impl, h) do
    send(h, {self(), :close})
    :ok
  end

  @doc "Waits until a child stopped with close/2 is gone."
  def await_closed(:plain, _port), do: :ok

  def await_closed(local, ps) when local in [:shared, :isolated] do
    receive do
      {^ps, :closed} -> :ok
    after
      30_000 -> raise "#{local}: no :closed reply 30 s after close"
    end
  end

  def await_closed(:node, pid) do
    receive do
      {^pid, :closed} -> :ok
    after
      30_000 -> raise "node: no :closed reply 30 s after close"
    end

    receive do
      {:EXIT, ^pid, _} -> :ok
    after
      30_000 -> raise "node: no exit message 30 s after close"
    end
  end

  @doc "Waits for the child's exit message; returns its reason."
  def await_exit(impl, h, timeout \\ 30_000)

  def await_exit(:plain, port, timeout) do
    receive do
      {^port, {:exit_status, s}} -> s
    after
      timeout -> raise "plain port: no exit after #{timeout} ms"
    end
  end

  def await_exit(impl, h, timeout) do
    receive do
      {:EXIT, ^h, reason} -> reason
    after
      timeout -> raise "#{impl}: no exit after #{timeout} ms"
    end
  end

  def exe(cmd) do
    System.find_executable(cmd) || raise "#{cmd} not found on PATH"
  end
end

# The `ps_port node`s the bench runs node mode against, and this BEAM's own
# distribution (all on 127.0.0.1, with a random cookie). One node serves every
# scenario; the memory scenario starts a fresh one per run (start_extra!/1), so
# its RSS growth is measured from an idle node.
defmodule Bench.Node do
  @moduledoc false

  def name, do: Process.get(:bench_node) || :persistent_term.get({__MODULE__, :main}).name
  def os_pid, do: :persistent_term.get({__MODULE__, :main}).os_pid
  def shim_option?, do: :persistent_term.get({__MODULE__, :shim_option}, false)

  @doc "Runs `fun` with node mode pointed at the instance `inst`."
  def with_node(inst, fun) do
    old = Process.put(:bench_node, inst.name)

    try do
      fun.()
    after
      if old, do: Process.put(:bench_node, old), else: Process.delete(:bench_node)
    end
  end

  @doc "Starts distribution here and the main ps_port node; returns its name."
  def start!(ps_port) do
    System.cmd("epmd", ["-daemon"])
    suffix = unique()
    cookie = "BENCH" <> Base.encode16(:rand.bytes(12))

    start_distribution(:"bench_#{suffix}@127.0.0.1", 50)

    Node.set_cookie(String.to_atom(cookie))
    dir = Path.join(System.tmp_dir!(), "ps_bench_#{suffix}")
    File.mkdir_p!(dir)
    cookie_file = Path.join(dir, "cookie")
    File.write!(cookie_file, cookie <> "\n")
    File.chmod!(cookie_file, 0o600)
    :persistent_term.put({__MODULE__, :cookie_file}, cookie_file)

    inst = start_instance!(ps_port)
    :persistent_term.put({__MODULE__, :main}, inst)
    :persistent_term.put({__MODULE__, :shim_option}, shim_takes_node?(inst.name))
    inst.name
  end

  # epmd -daemon returns before epmd listens: retry for a few seconds.
  defp start_distribution(name, tries) do
    case Node.start(name, :longnames) do
      {:ok, _} ->
        :ok

      {:error, {:already_started, _}} ->
        :ok

      other when tries > 1 ->
        _ = other
        Process.sleep(100)
        start_distribution(name, tries - 1)

      other ->
        raise "cannot start distribution: #{inspect(other)} (is epmd runnable?)"
    end
  end

  @doc "Starts another ps_port node (same cookie); stop it with stop_extra/1."
  def start_extra!(ps_port, env \\ []), do: start_instance!(ps_port, env)

  def stop_extra(inst), do: stop_instance(inst)

  def stop do
    case :persistent_term.get({__MODULE__, :main}, nil) do
      nil -> :ok
      inst -> stop_instance(inst)
    end
  end

  def log do
    keeper = :persistent_term.get({__MODULE__, :main}).keeper
    send(keeper, {:log, self()})

    receive do
      {:log, ^keeper, log} -> log
    after
      5_000 -> ""
    end
  end

  defp unique do
    Integer.to_string(:erlang.unique_integer([:positive])) <>
      "_" <> Integer.to_string(:rand.uniform(1_000_000_000))
  end

  defp start_instance!(ps_port, env \\ []) do
    name = :"ps_bench_#{unique()}@127.0.0.1"
    cookie_file = :persistent_term.get({__MODULE__, :cookie_file})
    parent = self()

    keeper =
      spawn(fn ->
        port =
          Port.open({:spawn_executable, ps_port}, [
            :binary,
            :stderr_to_stdout,
            :exit_status,
            env: env,
            args: [
              "node",
              "--name",
              Atom.to_string(name),
              "--cookie-file",
              cookie_file,
              "--allow-any",
              # The node ends with this BEAM, even when the bench is killed.
              "--exit-on-eof"
            ]
          ])

        keep(port, parent, "", false)
      end)

    receive do
      {:node_up, ^keeper, os_pid} ->
        if not Node.connect(name), do: raise("cannot connect to #{name}")
        %{name: name, os_pid: os_pid, keeper: keeper}

      {:node_failed, ^keeper, log} ->
        raise "ps_port node did not start:\n#{log}"
    after
      20_000 -> raise "ps_port node #{name} not up after 20 s"
    end
  end

  defp stop_instance(%{keeper: keeper}) do
    send(keeper, {:stop, self()})

    receive do
      {:stopped, ^keeper} -> :ok
    after
      15_000 -> :ok
    end
  end

  # The port's output is the node's log: keep its tail for error reports.
  defp keep(port, parent, log, up?) do
    receive do
      {^port, {:data, d}} ->
        log = tail(log <> d, 16_384)

        if not up? and String.contains?(log, " is up") do
          {:os_pid, os_pid} = Port.info(port, :os_pid)
          send(parent, {:node_up, self(), os_pid})
          keep(port, parent, log, true)
        else
          keep(port, parent, log, up?)
        end

      {^port, {:exit_status, s}} ->
        send(parent, {:node_failed, self(), log <> "\n(exit status #{s})"})

      {:stop, from} ->
        {:os_pid, os_pid} = Port.info(port, :os_pid)
        System.cmd("kill", ["-TERM", Integer.to_string(os_pid)])

        receive do
          {^port, {:exit_status, _}} -> :ok
        after
          10_000 -> System.cmd("kill", ["-KILL", Integer.to_string(os_pid)])
        end

        send(from, {:stopped, self()})

      {:log, from} ->
        send(from, {:log, self(), log})
        keep(port, parent, log, up?)
    end
  end

  defp tail(b, max) when byte_size(b) <= max, do: b
  defp tail(b, max), do: binary_part(b, byte_size(b) - max, max)

  # Whether ProtonStream.open/3 accepts `node:` (the shim's own node mode).
  defp shim_takes_node?(name) do
    ProtonStream.Options.validate(:stream, "true", [], node: name)
    true
  rescue
    _ -> false
  end
end
