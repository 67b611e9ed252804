defmodule ProtonStream.Daemon do
  @moduledoc """
  A long-running program as a supervised child, with its output logged, in
  the manner of `MuonTrap.Daemon`:

      children = [
        {ProtonStream.Daemon, ["my_server", ["--port", "4000"], [log_output: :info]]}
      ]

      Supervisor.start_link(children, strategy: :one_for_one)

  The daemon is a `ProtonStream` callback-mode process: the program and its
  whole tree are killed when the daemon stops (supervisor shutdown, crash,
  `GenServer.stop/1`), and the daemon stops when the program exits, with a
  reason from `:exit_status_to_reason`, so its supervisor restarts it.

  Options, besides every option of `ProtonStream.open/3` (`:cd`, `:env`,
  `:cgroup`, `:uid`, `node:` ...):

    * `:log_output` - Logger level to log stdout at, line by line (default:
      not logged)
    * `:log_prefix` - text before each logged line (default `"COMMAND: "`)
    * `:log_transform` - a function applied to each line before it is logged
      (default: invalid UTF-8 replaced by `?`)
    * `:logger_metadata` - keyword list added to the daemon's Logger metadata
    * `:stderr_to_stdout` - log stderr as stdout; otherwise stderr goes to
      this VM's stderr, as in `MuonTrap.Daemon`
    * `:exit_status_to_reason` - function from the exit status (`128 + n`
      for signal `n`) to the daemon's stop reason (default: `0` → `:normal`,
      `n` → `{:exit_status, n}`)
    * `:name` - register the daemon under this name
    * `:id` - the child spec's id (default `{ProtonStream.Daemon, command}`)
  """

  require Logger

  @behaviour ProtonStream

  @levels [:emergency, :alert, :critical, :error, :warning, :warn, :notice, :info, :debug]
  @own_opts [:log_output, :log_prefix, :log_transform, :logger_metadata, :exit_status_to_reason]
  # A partial line longer than this is logged without waiting for its end.
  @max_line 65_536

  @doc """
  The child spec for `{ProtonStream.Daemon, [command, args, opts]}` (or
  `[command, args]`).
  """
  @spec child_spec([binary() | [binary()] | keyword()]) :: Supervisor.child_spec()
  def child_spec([command, args]), do: child_spec([command, args, []])

  def child_spec([command, args, opts]) do
    %{
      id: Keyword.get(opts, :id, {__MODULE__, command}),
      start: {__MODULE__, :start_link, [command, args, Keyword.delete(opts, :id)]},
      type: :worker
    }
  end

  @doc """
  Starts the daemon running `command` with `args`, linked to the caller.
  Raises `ArgumentError` for bad options; returns
  `{:error, {:spawn_error, reason, message}}` when the program cannot be
  started.
  """
  @spec start_link(binary(), [binary()], keyword()) :: GenServer.on_start()
  def start_link(command, args, opts \\ []) do
    {own, ps_opts} = Keyword.split(opts, @own_opts)
    level = Keyword.get(own, :log_output)

    if level != nil and level not in @levels do
      raise ArgumentError,
            "invalid option :log_output with value #{inspect(level)}: expected one of #{inspect(@levels)}"
    end

    state = %{
      level: level,
      prefix: Keyword.get(own, :log_prefix, command <> ": "),
      transform: Keyword.get(own, :log_transform, &sanitize/1),
      metadata: Keyword.get(own, :logger_metadata, []),
      to_reason: Keyword.get(own, :exit_status_to_reason, &default_reason/1),
      buffer: ""
    }

    ProtonStream.start_link(__MODULE__, command, args, state, ps_opts)
  end

  @doc "The OS pid of the daemon's program."
  @spec os_pid(GenServer.server()) :: pos_integer()
  defdelegate os_pid(daemon), to: ProtonStream

  @doc "Output bytes and cgroup statistics; see `ProtonStream.statistics/1`."
  @spec statistics(GenServer.server()) :: ProtonStream.statistics()
  defdelegate statistics(daemon), to: ProtonStream

  @doc "The daemon's cgroup; see `ProtonStream.cgroup_path/1`."
  @spec cgroup_path(GenServer.server()) :: binary() | nil
  defdelegate cgroup_path(daemon), to: ProtonStream

  @doc "The daemon's cgroup limits as a `:cgroup` map; see `ProtonStream.cgroup_config/1`."
  @spec cgroup_config(GenServer.server()) :: ProtonStream.Cgroup.config() | nil
  defdelegate cgroup_config(daemon), to: ProtonStream

  @doc """
  Reads `file` (a v2 name such as `"memory.max"`, translated on v1 hosts)
  of the daemon's cgroup. `{:error, :nocgroup}` when it has none.
  """
  @spec cgget(GenServer.server(), binary()) :: {:ok, binary()} | {:error, atom()}
  def cgget(daemon, file) do
    case cgroup_path(daemon) do
      nil -> {:error, :nocgroup}
      path -> ProtonStream.Cgroup.get(path, file)
    end
  end

  @doc """
  Writes `value` to `file` of the daemon's cgroup (names as in `cgget/2`).
  """
  @spec cgset(GenServer.server(), binary(), binary() | integer()) :: :ok | {:error, atom()}
  def cgset(daemon, file, value) do
    case cgroup_path(daemon) do
      nil -> {:error, :nocgroup}
      path -> ProtonStream.Cgroup.set(path, file, value)
    end
  end

  ## Callbacks (the daemon runs as a ProtonStream callback-mode process)

  @doc false
  def init(state) do
    Logger.metadata(state.metadata)
    {:ok, state}
  end

  @impl ProtonStream
  def handle_stdout(_data, %{level: nil} = state), do: {:noreply, state}

  def handle_stdout(data, state) do
    [partial | lines] = Enum.reverse(String.split(state.buffer <> data, "\n"))
    Enum.each(Enum.reverse(lines), &log_line(&1, state))

    if byte_size(partial) > @max_line do
      log_line(partial, state)
      {:noreply, %{state | buffer: ""}}
    else
      {:noreply, %{state | buffer: partial}}
    end
  end

  @impl ProtonStream
  def handle_stderr(data, state) do
    IO.binwrite(:standard_error, data)
    {:noreply, state}
  end

  @impl ProtonStream
  def handle_exit(reason, state) do
    if state.level != nil and state.buffer != "", do: log_line(state.buffer, state)

    case reason do
      {:ps_port_exited, _} -> {:stop, reason, state}
      reason -> {:stop, state.to_reason.(ProtonStream.Run.exit_status(reason)), state}
    end
  end

  @doc false
  # Links the server inherited (a caller that started it and exited) and
  # other stray messages are not the daemon's business.
  def handle_info({:EXIT, _from, _reason}, state), do: {:noreply, state}

  def handle_info(message, state) do
    Logger.debug("ProtonStream.Daemon: ignored #{inspect(message, limit: 10)}")
    {:noreply, state}
  end

  defp log_line(line, state) do
    line = String.trim_trailing(line, "\r")
    Logger.log(state.level, fn -> state.prefix <> state.transform.(line) end)
  end

  defp default_reason(0), do: :normal
  defp default_reason(status), do: {:exit_status, status}

  defp sanitize(line), do: sanitize(line, "")

  defp sanitize(<<c::utf8, rest::binary>>, acc), do: sanitize(rest, <<acc::binary, c::utf8>>)
  defp sanitize(<<_, rest::binary>>, acc), do: sanitize(rest, acc <> "?")
  defp sanitize("", acc), do: acc
end
