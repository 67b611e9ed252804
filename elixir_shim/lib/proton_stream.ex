defmodule ProtonStream do
  @moduledoc """
  A streaming API for OS processes that mirrors Elixir's `Port`, with
  containment: the program and everything it starts are killed when its Elixir
  owner goes away, and on Linux it can run inside a cgroup with limits.

  This is a drop-in replacement for proton_stream 1.8 whose helper program is
  `ps_port`, written in Go (see `muontrap_path/0`).

  ## Message mode

  `open/3` starts a process (a `ProtonStream.Server`) that runs the program.
  The caller becomes the *owner* and is linked to it.

      {:ok, ps} = ProtonStream.open("cat", [])
      send(ps, {self(), {:command, "hello"}})

      receive do
        {^ps, {:data, data}} -> IO.puts("Got: \#{data}")
      end

      send(ps, {self(), :close})

  Messages to the process (from the owner; others are ignored):

    * `{pid, {:command, iodata}}` - write to the program's stdin (`command/2`)
    * `{pid, :close}` - stop the program; the sender gets `{ps, :closed}`
      once the process is gone (`close/1`)
    * `{pid, {:connect, new_pid}}` - make `new_pid` the owner; the old owner
      gets `{ps, :connected}` (`connect/2`)
    * `{pid, :eof}` - close the program's stdin, keep it running (`eof/1`)
    * `{pid, {:signal, signum}}` - send a signal to the program (`signal/2`)

  Messages to the owner (see `t:owner_message/0`):

    * `{ps, {:data, binary}}` - the program wrote to stdout
    * `{ps, {:error, binary}}` - the program wrote to stderr
    * `{ps, :closed}` - reply to `:close`
    * `{ps, :connected}` - reply to `:connect`
    * `{:EXIT, ps, reason}` - the program is gone, with `reason` `:normal`
      (exit status 0), `{:exit_status, n}` or `{:signal, n}`

  Every byte the program wrote arrives, in order, before `{:EXIT, ps, reason}`.
  That message is *sent* (as proton_stream does), so an owner that does not
  trap exits receives it as a plain message and is not killed by a failing
  program; after it the process stops normally. When the program was killed by
  the kernel's OOM killer (memory cgroup limit), the reason is still
  `{:signal, 9}` and a warning with the number of OOM kills is logged.

  When the owner dies, the process closes the port and stops (reason `:normal`
  when the owner exited normally, else `{:shutdown, {:owner_exited, reason}}`,
  which is not logged as a crash), and ps_port terminates the program and all
  its descendants: SIGTERM, then SIGKILL after `:delay_to_sigkill`
  milliseconds (default 500).

  ## Callback module mode

  `start_link/5` runs the program under a GenServer whose behaviour is
  supplied by a callback module; it fits in supervision trees:

      defmodule MyWorker do
        use GenServer
        @behaviour ProtonStream

        def start_link(args) do
          ProtonStream.start_link(__MODULE__, "my_command", [], args, [])
        end

        @impl GenServer
        def init(args), do: {:ok, %{buffer: "", args: args}}

        @impl ProtonStream
        def handle_stdout(data, state), do: {:noreply, %{state | buffer: state.buffer <> data}}

        @impl ProtonStream
        def handle_stderr(data, state) do
          IO.puts(:stderr, data)
          {:noreply, state}
        end

        @impl ProtonStream
        def handle_exit(reason, state), do: {:stop, reason, state}
      end

  The module's `init/1`, `handle_call/3`, `handle_cast/2`, `handle_info/2`,
  `handle_continue/2`, `terminate/2` and `code_change/3` are used when it
  defines them (with `use GenServer` it always does). `handle_stdout/2`,
  `handle_stderr/2` and `handle_exit/2` are optional: output without a
  callback is dropped, and the default exit handling is
  `{:stop, reason, state}`. In this mode `{pid, {:command, data}}`,
  `{pid, :close}`, `{pid, :eof}` and `{pid, {:signal, n}}` are accepted from
  any process.

  ## Flow control

  ps_port stops reading the program's stdout and stderr when `:stdio_window`
  bytes (default 256 KiB) of output are unacknowledged; the program then
  blocks in `write(2)`. The server acknowledges a chunk as soon as it has
  passed it on: in message mode right after sending it to the owner, in
  callback mode after `handle_stdout/2` or `handle_stderr/2` returned. So the
  window bounds the data queued in the *server's* mailbox, and in callback
  mode it is end-to-end backpressure: a slow callback slows the program down.
  In message mode, as with a plain `Port`, the owner's own mailbox is not
  bounded by the window: an owner that does not keep up with a program that
  writes without pause accumulates the output in its mailbox. Use callback
  mode (or a program that waits for input) when that matters.

  ## Errors

    * Bad options raise `ArgumentError` in the caller, naming the option;
      a command that is not found raises `ErlangError` with reason `:enoent`
      (as `System.cmd/3` does). See `ProtonStream.Options`.
    * A program that is found but cannot be started (permissions, unknown
      user, a cgroup that cannot be created, ...) makes `open/3` and
      `start_link/5` return `{:error, {:spawn_error, reason, message}}`, with
      `reason` an atom such as `:eacces`, `:baduser`, `:badcgroup` and
      `message` a binary that says what failed.
    * If ps_port itself dies without reporting the program's exit, the reason
      is `{:ps_port_exited, status}`.

  ## Differences from proton_stream 1.8

    * `os_pid/1` returns the program's own pid (not the helper's).
    * `eof/1` and `signal/2` are new.
    * No output is lost: all of it arrives before the exit message.
    * `{:EXIT, ps, reason}` is sent once (proton_stream also let a trapping
      owner see a second `{:EXIT, ps, :normal}`).
  """

  @typedoc "A running ProtonStream process."
  @type server :: GenServer.server()

  @typedoc "Why the program is gone, as reported in `{:EXIT, ps, reason}`."
  @type exit_reason ::
          :normal
          | {:exit_status, pos_integer()}
          | {:signal, pos_integer()}
          | {:ps_port_exited, integer() | term()}

  @typedoc "Messages the owner receives from the process `ps`."
  @type owner_message ::
          {pid(), {:data, binary()}}
          | {pid(), {:error, binary()}}
          | {pid(), :closed}
          | {pid(), :connected}
          | {:EXIT, pid(), exit_reason()}

  @typedoc "Messages the process accepts (from its owner in message mode)."
  @type request ::
          {pid(), {:command, iodata()}}
          | {pid(), :close}
          | {pid(), {:connect, pid()}}
          | {pid(), :eof}
          | {pid(), {:signal, 1..64}}

  @typedoc "A signal: its number or a name like `:sigterm` (Linux numbering)."
  @type signal :: 1..64 | atom()

  @doc "Called with every chunk the program writes to stdout (callback mode)."
  @callback handle_stdout(data :: binary(), state :: term()) ::
              {:noreply, new_state :: term()}
              | {:noreply, new_state :: term(), timeout() | :hibernate | {:continue, term()}}
              | {:stop, reason :: term(), new_state :: term()}

  @doc "Called with every chunk the program writes to stderr (callback mode)."
  @callback handle_stderr(data :: binary(), state :: term()) ::
              {:noreply, new_state :: term()}
              | {:noreply, new_state :: term(), timeout() | :hibernate | {:continue, term()}}
              | {:stop, reason :: term(), new_state :: term()}

  @doc """
  Called once the program is gone and all its output has been handled
  (callback mode). The default stops the process with `reason`.
  """
  @callback handle_exit(reason :: exit_reason(), state :: term()) ::
              {:stop, reason :: term(), new_state :: term()}

  @optional_callbacks handle_stdout: 2, handle_stderr: 2, handle_exit: 2

  @signals [
    sighup: 1,
    sigint: 2,
    sigquit: 3,
    sigill: 4,
    sigtrap: 5,
    sigabrt: 6,
    sigbus: 7,
    sigfpe: 8,
    sigkill: 9,
    sigusr1: 10,
    sigsegv: 11,
    sigusr2: 12,
    sigpipe: 13,
    sigalrm: 14,
    sigterm: 15,
    sigstkflt: 16,
    sigchld: 17,
    sigcont: 18,
    sigstop: 19,
    sigtstp: 20,
    sigttin: 21,
    sigttou: 22,
    sigurg: 23,
    sigxcpu: 24,
    sigxfsz: 25,
    sigvtalrm: 26,
    sigprof: 27,
    sigwinch: 28,
    sigio: 29,
    sigpwr: 30,
    sigsys: 31
  ]

  @doc """
  Runs `command` with `args` and returns its process; the caller becomes the
  owner and is linked to it.

  `command` is looked up on `PATH` unless it is a path. See
  `ProtonStream.Options` for the options: `:cd`, `:env`, `:arg0`,
  `:cgroup_controllers`, `:cgroup_base`, `:cgroup_path`, `:cgroup_sets`,
  `:delay_to_sigkill`, `:uid`, `:gid`, `:stdio_window`, `:stderr_to_stdout`,
  `:capture_stderr_only`, `:parallelism`.

  Returns `{:ok, pid}` once the program runs, or
  `{:error, {:spawn_error, reason, message}}` when it could not be started.
  Raises `ArgumentError` for bad options and `ErlangError` (`:enoent`) for a
  command that is not found.

  ## Example

      {:ok, ps} = ProtonStream.open("echo", ["hello"])

      receive do
        {^ps, {:data, "hello\\n"}} -> :ok
      end
  """
  @spec open(binary(), [binary()], keyword()) :: {:ok, pid()} | {:error, term()}
  def open(command, args \\ [], opts \\ []) do
    options = ProtonStream.Options.validate(:stream, command, args, opts)
    ProtonStream.Server.start_owned(options, self())
  end

  @doc """
  Starts a process running `command` whose events go to the callback
  `module`, linked to the caller (for supervision trees).

  `init_arg` is passed to `module.init/1`. `opts` holds the options of
  `open/3` plus GenServer options: `:name` registers the process (also
  `:timeout`, `:debug`, `:spawn_opt`, `:hibernate_after`).
  """
  @spec start_link(module(), binary(), [binary()], term(), keyword()) :: GenServer.on_start()
  def start_link(module, command, args \\ [], init_arg \\ [], opts \\ []) when is_atom(module) do
    ProtonStream.Server.start_callback(module, command, args, init_arg, opts)
  end

  @doc """
  Writes `data` to the program's stdin. Same as
  `send(ps, {self(), {:command, data}})`; raises `ArgumentError` when `data`
  is not iodata.
  """
  @spec command(server(), iodata()) :: :ok
  def command(server, data) do
    if not is_binary(data), do: IO.iodata_length(data)
    send(server, {self(), {:command, data}})
    :ok
  end

  @doc """
  Stops the program. Same as `send(ps, {self(), :close})`; the caller gets
  `{ps, :closed}` once the process is gone.
  """
  @spec close(server()) :: :ok
  def close(server) do
    send(server, {self(), :close})
    :ok
  end

  @doc """
  Makes `new_owner` the owner (and links it). Same as
  `send(ps, {self(), {:connect, new_owner}})`; the old owner gets
  `{ps, :connected}` and later output goes to `new_owner`.
  """
  @spec connect(server(), pid()) :: :ok
  def connect(server, new_owner) when is_pid(new_owner) do
    send(server, {self(), {:connect, new_owner}})
    :ok
  end

  @doc """
  Closes the program's stdin once everything written before has been
  delivered; the program keeps running (it sees end of file). Same as
  `send(ps, {self(), :eof})`. Later `{:command, _}` data is dropped with a
  logged warning.
  """
  @spec eof(server()) :: :ok
  def eof(server) do
    send(server, {self(), :eof})
    :ok
  end

  @doc """
  Sends a signal to the program (not to its children). `signal` is a number
  (1..64) or a name such as `:sigterm`, `:sigint`, `:sighup`, `:sigusr1`,
  `:sigkill` (Linux numbering). Same as `send(ps, {self(), {:signal, n}})`.
  Raises `ArgumentError` for an unknown signal.
  """
  @spec signal(server(), signal()) :: :ok
  def signal(server, signal) do
    send(server, {self(), {:signal, signal_number(signal)}})
    :ok
  end

  @doc """
  Returns the number of `signal` (a number 1..64 or a name like `:sigterm`).
  Raises `ArgumentError` for anything else.
  """
  @spec signal_number(signal()) :: 1..64
  def signal_number(signum) when is_integer(signum) and signum in 1..64, do: signum

  def signal_number(name) when is_atom(name) do
    case Keyword.fetch(@signals, name) do
      {:ok, signum} ->
        signum

      :error ->
        raise ArgumentError,
              "unknown signal #{inspect(name)}; use a number 1..64 or one of " <>
                Enum.map_join(Keyword.keys(@signals), ", ", &inspect/1)
    end
  end

  def signal_number(other) do
    raise ArgumentError,
          "invalid signal #{inspect(other)}; use a number 1..64 or a name like :sigterm"
  end

  @doc """
  Returns the OS pid of the program itself (not of the ps_port helper).
  """
  @spec os_pid(server()) :: pos_integer()
  def os_pid(server) do
    GenServer.call(server, {:"$proton_stream", :os_pid})
  end

  @doc """
  Returns the absolute path of the ps_port helper executable (the name is
  kept from proton_stream, whose helper was muontrap).
  """
  @spec muontrap_path() :: binary()
  def muontrap_path, do: ProtonStream.Port.executable()
end
