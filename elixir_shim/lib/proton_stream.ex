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

  When the owner dies, the process stops (reason `:normal` when the owner
  exited normally, else `{:shutdown, {:owner_exited, reason}}`, which is not
  logged as a crash), and ps_port terminates the program and all its
  descendants: SIGTERM, then SIGKILL after `:delay_to_sigkill` milliseconds
  (default 500).

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

  ## Shared and isolated helpers

  Without `:node`, programs run in the VM's one shared `ps_port`
  (`ps_port --shared`), started and supervised by the `:proton_stream`
  application (`ProtonStream.SharedPort`): an open costs a fork, not a new
  helper process. `ps` is still a process of its own (a
  `ProtonStream.Server`), but in message mode the output goes from the
  shared port's process straight to the owner. Windows are per program: an
  owner that never reads stops only its own program.

  With `isolated: true`, the program gets a `ps_port --packet` of its own,
  as in proton_stream 1.8.

  Should the shared `ps_port` die (killed, crashed), every owner gets
  `{:EXIT, ps, {:ps_port_exited, status}}` (`status` as the VM reports the
  helper's exit, `137` for SIGKILL; callback modules get the same reason in
  `handle_exit/2`), every program and descendant goes down, and a new shared
  `ps_port` is started at once. If the process that owns the shared port
  dies, the reason is `{:ps_port_exited, {:shared_port_down, reason}}`. The
  shared `ps_port` starts each program from the VM's environment as it is
  at the open (`System.put_env/2` before an open counts).

  ## Flow control

  ps_port stops reading the program's stdout and stderr when `:stdio_window`
  bytes (default 256 KiB) of output are unacknowledged; the program then
  blocks in `write(2)`. The server acknowledges output once it has passed
  it on: in message mode after sending it to the owner, in callback mode
  after `handle_stdout/2` or `handle_stderr/2` returned; in batches, once
  half the window has been passed on since the last acknowledgement, so the
  program always keeps at least half its window of credit. So the
  window bounds the data queued in the *server's* mailbox, and in callback
  mode it is end-to-end backpressure: a slow callback slows the program down.
  In message mode, as with a plain `Port`, the owner's own mailbox is not
  bounded by the window: an owner that does not keep up with a program that
  writes without pause accumulates the output in its mailbox. Use callback
  mode (or a program that waits for input) when that matters.

  ## Node mode

  With `node: node`, `open/3` and `start_link/5` run the program on a ps_port
  node: `ps_port node` joined to this cluster, on this host or another (see
  `ProtonStream.Node`, which starts one here under a supervisor, and the
  README for a second host). Options, messages, callbacks and the functions
  of this module work the same; the command is looked up on the node's
  `PATH` and must match one of the node's `--allow` patterns.

    * **Message mode** (`open/3`): `ps` *is* the program's pid on the node. The
      owner talks to it with plain `send/2` over distribution, with no local
      process in between, and the node sends the output, `{ps, :closed}`,
      `{ps, :connected}` and finally `{:EXIT, ps, reason}` straight to the
      owner. The owner is *not* linked to `ps`: the node monitors the owner
      and takes the program down when the owner dies (however it dies,
      including its node going down), and `{:EXIT, ps, reason}` is a plain
      message, so a link would only add a second `{:EXIT, ps, :normal}` for
      an owner that traps exits. A small local watcher monitors `ps`: if the
      connection to the node is lost before the exit was reported, the owner
      gets `{:EXIT, ps, {:ps_port_exited, :noconnection}}`. The watcher
      follows ownership moved with `connect/2` (not a bare `{:connect, _}`
      message).
    * **Callback mode** (`start_link/5`): the local server owns the node's
      pid, opened with `flow: :ack` and acknowledging output after its
      callback returned (in batches of half the window, as in port mode),
      so a slow callback slows the program down as in port mode.
    * **Flow control** in message mode: with `flow: :queue_len` (default) the
      node watches the owner's `message_queue_len` and stops reading the
      program's output while `:stdio_window` bytes are unconsumed, so unlike
      port mode the owner's mailbox is bounded. With `flow: :ack` the owner
      calls `ack/2` with the size of every `{:data, _}` / `{:error, _}`
      payload it handled (cheaper and exact).
    * **stdin** is bounded by `:stdin_limit` (16 MiB unless given): a command
      that would queue more is refused as a whole and the owner gets
      `{ps, {:error, :stdin_overflow, message}}`; after `eof/1` commands give
      `{ps, {:error, :stdin_closed, message}}` (the same as port mode, which also logs them).
      `command/2` sends data as one binary; a command over the node's
      `--max-request` (16 MiB by default, lists weighed at 16 bytes an
      element) is refused whole with `{ps, {:error, :too_large, message}}`.

  Differences that follow from the program living on another node: after
  `{ps, :closed}` the owner also gets `{:EXIT, ps, :normal}` (as a message,
  trapping exits or not), and `ps` ends just after it rather than before
  `:closed`; a command not found on the node's `PATH` raises `ErlangError`
  `:enoent` as in port mode, but an absolute path that does not exist there
  is `{:error, {:spawn_error, :enoent, message}}`; refusals by the node are
  spawn errors: `:not_allowed`, `:too_many_children`, `:badarg` (e.g.
  cgroup options on a node without `--cgroup-base`, a loader variable in
  `:env` or a `:uid` the node does not allow), `:too_large`, `:nodedown`,
  `:not_distributed`. Cgroup paths are relative to the node's
  `--cgroup-base`. Messages from processes other than the owner are ignored
  and logged by the node, not here. The ergo release ps_port nodes are built
  on speaks OTP 25's distribution only (it lacks the UNLINK_ID flag OTP 26
  and later require); ps_port adds what is missing itself, and is tested
  with OTP 25 and 27 (see the README).

  ## Errors

    * Bad options raise `ArgumentError` in the caller, naming the option;
      a command that is not found raises `ErlangError` with reason `:enoent`
      (as `System.cmd/3` does), its message naming the program and the
      `PATH` searched. See `ProtonStream.Options` and
      `ProtonStream.SpawnErrors`.
    * A program that is found but cannot be started (permissions, unknown
      user, a cgroup that cannot be created, ...) makes `open/3` and
      `start_link/5` return `{:error, {:spawn_error, reason, message}}`, with
      `reason` an atom such as `:eacces`, `:enoent`, `:e2big`, `:baduser`,
      `:badcgroup` and `message` a binary that says what failed and why (a
      directory, the file's mode, a missing `#!` interpreter, the argument
      sizes and ARG_MAX, the user or group asked for).
    * If ps_port itself dies without reporting the program's exit, the reason
      is `{:ps_port_exited, status}` (see "Shared and isolated helpers").
    * Without the `:proton_stream` application started, a program that is
      not isolated cannot be opened: `{:error, {:spawn_error, :noproc, message}}`.

  ## Differences from proton_stream 1.8

    * `os_pid/1` returns the program's own pid (not the helper's).
    * `eof/1` and `signal/2` are new.
    * No output is lost: all of it arrives before the exit message.
    * `{:EXIT, ps, reason}` is sent once (proton_stream also let a trapping
      owner see a second `{:EXIT, ps, :normal}`).
  """

  require ProtonStream.Remote

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
  Runs `command` with `args` to completion and returns
  `{collected_stdout, exit_status}`, like `System.cmd/3` and
  `MuonTrap.cmd/3`, with containment: when the caller dies or `:timeout`
  expires, the program and everything it started are killed.

  Options (besides every option of `open/3`: `:cd`, `:env`, `:arg0`,
  `:stderr_to_stdout`, cgroups, `:uid`/`:gid`, `:delay_to_sigkill`,
  `node:` ...):

    * `:into` - a `Collectable` for stdout (default `""`), e.g.
      `IO.stream()` to print it as it comes
    * `:timeout` - milliseconds (default `:infinity`); when it expires the
      program's whole tree is killed and `{output_so_far, :timeout}` is
      returned
    * `:input` - stdin: a binary, iodata or any `Enumerable` of binaries
      (e.g. `File.stream!/2`), followed by end of file. Without it the
      program's stdin is at end of file from the start. Input of any size
      streams with bounded memory: at most half of `:stdin_limit` (16 MiB
      by default) is sent ahead of what ps_port reports written to the
      program, and the Enumerable is read no faster than the program reads,
      so a slow reader slows the input (as in `stream!/3`).
    * `:stderr` - `:console` (default: written to this VM's stderr, as
      `System.cmd/3` leaves it), `:log` (a Logger warning per chunk),
      `:discard`, or `:merge` (same as `stderr_to_stdout: true`)

  The exit status is the program's, or `128 + n` when signal `n` killed it.
  Raises like `open/3` for bad options and a program that is not found
  (`ErlangError` `:enoent`), `ErlangError` with ps_port's reason atom and
  message when the program cannot be started, and `ProtonStream.ExitError`
  when `:input` could not be written. Leaves no message in the caller's
  mailbox.

  ## Example

      {"hello\n", 0} = ProtonStream.cmd("echo", ["hello"])
      {"3\n", 0} = ProtonStream.cmd("wc", ["-l"], input: ["a\n", "b\n", "c\n"])
      {_, :timeout} = ProtonStream.cmd("sleep", ["10"], timeout: 100)
  """
  @spec cmd(binary(), [binary()], keyword()) :: {Collectable.t(), non_neg_integer() | :timeout}
  defdelegate cmd(command, args \\ [], opts \\ []), to: ProtonStream.Cmd

  @doc """
  Returns a lazy `Enumerable` of `command`'s stdout chunks (binaries).

  The program starts when the stream is enumerated and is demand-driven: it
  gets a new window of output only as the consumer takes chunks, so memory
  stays bounded however slowly they are consumed. Halting early
  (`Enum.take/2`, ...) kills the program and its whole tree. A non-zero exit
  raises `ProtonStream.ExitError` (carrying the status) after all output was
  yielded.

  Takes `:input` and `:stderr` as `cmd/3` does (`:stderr` `:merge` puts
  stderr in the stream), plus every option of `open/3`.

  ## Example

      ProtonStream.stream!("seq", ["1", "100000"])
      |> Stream.flat_map(&String.split(&1, "\n", trim: true))
      |> Enum.take(3)
      #=> ["1", "2", "3"]
  """
  @spec stream!(binary(), [binary()], keyword()) :: Enumerable.t()
  defdelegate stream!(command, args \\ [], opts \\ []), to: ProtonStream.Stream

  @doc """
  Runs `command` with `args` and returns its process; the caller becomes the
  owner and is linked to it.

  `command` is looked up on `PATH` unless it is a path. See
  `ProtonStream.Options` for the options: `:cd`, `:env`, `:arg0`,
  `:cgroup_controllers`, `:cgroup_base`, `:cgroup_path`, `:cgroup_sets`,
  `:delay_to_sigkill`, `:uid`, `:gid`, `:stdio_window`, `:stderr_to_stdout`,
  `:capture_stderr_only`, `:parallelism`, `:stdin_limit`, `:isolated` (a
  ps_port of its own, see "Shared and isolated helpers"), and `:node` (with
  `:flow`) to run the program on a ps_port node (see "Node mode" above).

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
    case ProtonStream.Options.validate(:stream, command, args, opts) do
      %{node: _} = options ->
        case ProtonStream.Remote.open_owned(options, self()) do
          {:not_found, message} -> ProtonStream.SpawnErrors.not_found!(message)
          result -> result
        end

      options ->
        ProtonStream.Server.start_owned(options, self())
    end
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

  A command is taken or refused whole, never cut: when the program's stdin
  queue already holds data and this command would take it past
  `:stdin_limit`, or when the command is larger than the 64 MiB ps_port's
  frames can carry, none of it is written and the owner gets
  `{ps, {:error, :stdin_overflow, message}}`. (Node mode: a command over the
  node's `--max-request`, 16 MiB by default, is refused whole with
  `{ps, {:error, :too_large, message}}`, see "Node mode".)
  """
  @spec command(server(), iodata()) :: :ok
  def command(server, data) when ProtonStream.Remote.remote?(server) do
    # Raises ArgumentError for data that is not iodata.
    ProtonStream.Remote.command(server, self(), data)
  end

  def command(server, data) do
    if not is_binary(data), do: IO.iodata_length(data)
    request(server, {:command, data})
  end

  @doc """
  Stops the program. Same as `send(ps, {self(), :close})`; the caller gets
  `{ps, :closed}` once the process is gone.
  """
  @spec close(server()) :: :ok
  def close(server), do: request(server, :close)

  @doc """
  Makes `new_owner` the owner (and links it). Same as
  `send(ps, {self(), {:connect, new_owner}})`; the old owner gets
  `{ps, :connected}` and later output goes to `new_owner`.
  """
  @spec connect(server(), pid()) :: :ok
  def connect(server, new_owner) when is_pid(new_owner) do
    request(server, {:connect, new_owner})

    if ProtonStream.Remote.remote?(server),
      do: ProtonStream.Remote.owner_changed(server, new_owner),
      else: :ok
  end

  @doc """
  Closes the program's stdin once everything written before has been
  delivered; the program keeps running (it sees end of file). Same as
  `send(ps, {self(), :eof})`. Later `{:command, _}` data is dropped with a
  logged warning.
  """
  @spec eof(server()) :: :ok
  def eof(server), do: request(server, :eof)

  @doc """
  Sends a signal to the program (not to its children). `signal` is a number
  (1..64) or a name such as `:sigterm`, `:sigint`, `:sighup`, `:sigusr1`,
  `:sigkill` (Linux numbering). Same as `send(ps, {self(), {:signal, n}})`.
  Raises `ArgumentError` for an unknown signal.
  """
  @spec signal(server(), signal()) :: :ok
  def signal(server, signal), do: request(server, {:signal, signal_number(signal)})

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
  Tells a ps_port node that `bytes` of output from `ps` were handled: needed
  only in message mode with `node: node, flow: :ack`, after every
  `{ps, {:data, data}}` or `{ps, {:error, data}}`, with `byte_size(data)`.
  Same as `send(ps, {self(), {:ack, bytes}})`. For any other process it does
  nothing (the local server acknowledges by itself).
  """
  @spec ack(server(), non_neg_integer()) :: :ok
  def ack(server, bytes) when is_integer(bytes) and bytes >= 0 do
    if ProtonStream.Remote.remote?(server), do: request(server, {:ack, bytes}), else: :ok
  end

  # Every request is the message {sender, request}, to a local server or a
  # node's pid alike.
  defp request(server, request) do
    send(server, {self(), request})
    :ok
  end

  @doc """
  Returns the OS pid of the program itself (not of the ps_port helper), on
  whichever host it runs.
  """
  @spec os_pid(server()) :: pos_integer()
  def os_pid(server) do
    GenServer.call(server, :"$os_pid")
  end

  @typedoc """
  What `statistics/1` returns: the program's output bytes so far, and its
  cgroup's figures keyed by v2 file names (see `ProtonStream.Cgroup`).
  """
  @type statistics :: %{
          output_byte_count: non_neg_integer(),
          cgroup: %{optional(binary()) => integer() | %{optional(binary()) => integer()}}
        }

  @doc """
  The cgroup the program runs in (relative to the controllers' roots,
  e.g. `"proton_stream/1a2b3c4d"`), or nil when it was given no cgroup.
  For a ps_port node's program on this host the path includes the node's
  `--cgroup-base`.

  Takes a local ProtonStream process: one from `open/3` in port mode, or
  from `start_link/5` (and `ProtonStream.Daemon`) in any mode. Raises
  `ArgumentError` for a node mode `open/3` pid (it lives on the node).
  """
  @spec cgroup_path(server()) :: binary() | nil
  def cgroup_path(server) do
    case info(server) do
      %{cgroup_path: nil} -> nil
      %{cgroup_path: path} -> actual_cgroup_path(server, path)
    end
  end

  defp actual_cgroup_path(server, path) do
    with os_pid when is_integer(os_pid) <- os_pid(server),
         actual when is_binary(actual) <- ProtonStream.Cgroup.of_os_pid(os_pid),
         true <- String.ends_with?(actual, path) do
      actual
    else
      _ -> path
    end
  end

  @doc """
  The program's cgroup limits as a `:cgroup` map (see `ProtonStream.Cgroup`),
  read from the group's files and reusable as the `:cgroup` option; nil when
  it has no cgroup. Takes the processes `cgroup_path/1` takes.
  """
  @spec cgroup_config(server()) :: ProtonStream.Cgroup.config() | nil
  def cgroup_config(server) do
    if path = cgroup_path(server), do: ProtonStream.Cgroup.config(path)
  end

  @doc """
  `%{output_byte_count: n, cgroup: %{...}}`: the stdout and stderr bytes the
  program wrote so far, and its cgroup's figures keyed by v2 file names on
  every host (`"memory.current"`, `"memory.peak"`,
  `"cpu.stat" => %{"usage_usec" => ...}`, `"pids.current"`,
  `"memory.events" => %{"oom_kill" => ...}`; empty without a cgroup). Takes
  the processes `cgroup_path/1` takes.
  """
  @spec statistics(server()) :: statistics()
  def statistics(server) do
    %{output_byte_count: count, cgroup_path: path} = info(server)
    path = if path, do: actual_cgroup_path(server, path)
    cgroup = if path, do: ProtonStream.Cgroup.statistics(path), else: %{}
    %{output_byte_count: count, cgroup: cgroup}
  end

  defp info(server) do
    if ProtonStream.Remote.remote?(server) do
      raise ArgumentError,
            "#{inspect(server)} is a program's pid on a ps_port node (node mode open/3); " <>
              "cgroup_path/1, cgroup_config/1 and statistics/1 take local ProtonStream processes " <>
              "(start it with start_link/5 or ProtonStream.Daemon for those)"
    end

    GenServer.call(server, {:"$proton_stream", :info})
  end

  @doc """
  A child spec to run `command` under a supervisor: `{ProtonStream,
  [command, args, opts]}`. The child is a `ProtonStream.Daemon` (its options
  are accepted; without `:log_output` the output is dropped): the program
  dies with the child, and the child stops when the program exits.
  """
  @spec child_spec([binary() | [binary()] | keyword()]) :: Supervisor.child_spec()
  def child_spec([command, args]), do: child_spec([command, args, []])

  def child_spec([command, args, opts]) do
    %{
      ProtonStream.Daemon.child_spec([command, args, opts])
      | id: Keyword.get(opts, :id, {__MODULE__, command})
    }
  end

  @doc """
  Sets the terminal window size of a program started with `pty: true` to
  `{rows, columns}`; the program gets `SIGWINCH`. The program must run on
  this host (port mode, or a ps_port node on this host). See
  `ProtonStream.Pty`.
  """
  @spec pty_resize(server(), {pos_integer(), pos_integer()}) :: :ok | {:error, binary()}
  def pty_resize(server, {rows, cols})
      when is_integer(rows) and rows > 0 and is_integer(cols) and cols > 0 do
    ProtonStream.Pty.resize(os_pid(server), rows, cols)
  end

  @doc """
  Returns the absolute path of the ps_port helper executable (the name is
  kept from proton_stream, whose helper was muontrap).
  """
  @spec muontrap_path() :: binary()
  def muontrap_path, do: ProtonStream.Port.executable()
end
