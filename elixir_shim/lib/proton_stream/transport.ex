defmodule ProtonStream.Transport do
  @moduledoc """
  How a `ProtonStream.Server` reaches its program: the boundary between the
  server (message mode or callback mode) and where the program runs.

    * `ProtonStream.Transport.Shared` - the VM's shared `ps_port --shared`
      (the default), through `ProtonStream.SharedPort`;
    * `ProtonStream.Transport.Isolated` - a `ps_port --packet` of the
      program's own (`isolated: true`);
    * `ProtonStream.Transport.Remote` - a ps_port node (`node: node`, callback
      mode; message mode on a node has no local server, see
      `ProtonStream.Remote`).

  A transport opens the program, writes requests to it, and turns the
  messages the server receives into `t:event/0`s. The server never looks at
  a port or a frame itself.
  """

  @typedoc "What a transport keeps for one program (its own business)."
  @type handle :: term()

  @typedoc """
  What happened to the program, decoded from a message the server received:

    * `{:stdout, data}` / `{:stderr, data}` - output, to be passed on and
      then acknowledged with `c:ack/2`;
    * `{:error, reason, message}` - a refused request or another problem;
    * `{:oom_killed, count}` - the OOM killer struck in its memory cgroup;
    * `{:stdin_written, bytes}` - ps_port wrote `bytes` more of stdin to the
      program (only when opened with the internal `stdin_ack: true` option,
      which the server sets for a callback module exporting
      `handle_stdin_written/2`);
    * `{:exit, reason}` - the program is gone after all its output; the
      server reports `reason`;
    * `{:exit_sent, reason}` - the same, but the owner has already been sent
      `{:EXIT, ps, reason}` (the shared port's router does that in message
      mode, after the output it forwarded itself).
  """
  @type event ::
          {:stdout, binary()}
          | {:stderr, binary()}
          | {:error, atom(), binary()}
          | {:oom_killed, non_neg_integer()}
          | {:stdin_written, pos_integer()}
          | {:exit, ProtonStream.exit_reason()}
          | {:exit_sent, ProtonStream.exit_reason()}

  @doc """
  Opens the program for the calling server. `owner` is the owner in message
  mode, `nil` in callback mode. Returns the handle and the program's OS pid
  (nil when it is already gone).
  """
  @callback open(options :: ProtonStream.Options.t(), owner :: pid() | nil) ::
              {:ok, handle(), pos_integer() | nil} | {:error, term()}

  @doc "Decodes a message the server received: `:unknown` when it is not the transport's."
  @callback event(message :: term(), handle()) :: {:event, event()} | :ignore | :unknown

  @doc """
  Writes `data` to the program's stdin, whole, or refuses it whole
  (`{:error, :stdin_overflow, message}`, see `fits_frame/2`).
  """
  @callback command(handle(), binary()) :: :ok | {:error, :stdin_overflow, binary()}

  @doc "Closes the program's stdin once the queued data is written."
  @callback eof(handle()) :: :ok

  @doc "Sends signal `signum` to the program."
  @callback signal(handle(), 1..64) :: :ok

  @doc "Acknowledges `bytes` of output the server has passed on."
  @callback ack(handle(), non_neg_integer()) :: :ok

  @doc """
  Message mode: output goes to `new_owner` from now on, and `old_owner` gets
  `{ps, :connected}` after everything sent to it before. Optional: a
  transport whose output always passes through the server leaves it out,
  and the server tells `old_owner` itself (see `connect/4`).
  """
  @callback connect(handle(), old_owner :: pid(), new_owner :: pid()) :: :ok

  @doc """
  Stops the program (its tree goes down as on owner death). `reply_to`, when
  a pid, gets `{ps, :closed}` once the calling server is gone.
  """
  @callback close(handle(), reply_to :: pid() | nil) :: :ok

  @doc """
  Output bytes passed on without going through the server (the shared
  port's router sends message mode's output straight to the owner); the
  server adds what it passed on itself. Optional, as `c:connect/3`: none
  when it is left out.
  """
  @callback output_bytes(handle()) :: non_neg_integer()

  @optional_callbacks connect: 3, output_bytes: 1

  @doc """
  Calls `transport`'s `c:connect/3`, or, for a transport without one (its
  output passes through the calling server, so nothing sent to `old_owner`
  can be behind), sends `{ps, :connected}` to `old_owner` itself.
  """
  @spec connect(module(), handle(), pid(), pid()) :: :ok
  def connect(transport, handle, old_owner, new_owner) do
    if function_exported?(transport, :connect, 3) do
      transport.connect(handle, old_owner, new_owner)
    else
      send(old_owner, {self(), :connected})
      :ok
    end
  end

  @doc "`transport`'s `c:output_bytes/1`, or 0 for a transport without one."
  @spec output_bytes(module(), handle()) :: non_neg_integer()
  def output_bytes(transport, handle) do
    if function_exported?(transport, :output_bytes, 1),
      do: transport.output_bytes(handle),
      else: 0
  end

  @doc """
  `:ok` when `data` fits one `{:command, ...}` frame of at most `max` bytes
  of payload (ps_port's frame limit, `ProtonStream.Limits`, minus the
  frame's header); otherwise the refusal a transport returns from
  `c:command/2`. A command is taken or refused whole, never cut: a program
  must not see half of one.
  """
  @spec fits_frame(binary(), pos_integer()) :: :ok | {:error, :stdin_overflow, binary()}
  def fits_frame(data, max) when byte_size(data) <= max, do: :ok

  def fits_frame(data, max) do
    {:error, :stdin_overflow,
     "a command of #{byte_size(data)} bytes was refused whole: one command carries at most " <>
       "#{max} bytes (ps_port's #{div(ProtonStream.Limits.fetch!(:max_frame), 1024 * 1024)} MiB " <>
       "frame limit); send the data as several commands, each taken or refused whole"}
  end

  @doc """
  ps_port's default output window in bytes: `stdio_window_default` in the
  limits table both read (`ProtonStream.Limits`; 256 KiB).
  Whoever acks output (the server, or the shared port's router in message
  mode) opens the program with an explicit window, this one unless the
  options name one, and batches its acks against it: what it batches against
  is then what ps_port (or a node started with another default) enforces.
  """
  @spec default_window() :: pos_integer()
  def default_window, do: ProtonStream.Limits.fetch!(:stdio_window_default)

  @doc """
  How many bytes of passed-on output make an ack for a program opened with
  `window`: half the window, rounded up. The program then always keeps at
  least half its window of credit, so it never waits for an ack held back.
  """
  @spec ack_at(pos_integer()) :: pos_integer()
  def ack_at(window), do: div(window + 1, 2)

  @doc "The transport module for validated options."
  @spec for_options(ProtonStream.Options.t()) :: module()
  def for_options(%{node: _}), do: ProtonStream.Transport.Remote
  def for_options(%{isolated: true}), do: ProtonStream.Transport.Isolated
  def for_options(_options), do: ProtonStream.Transport.Shared

  @doc """
  Sends `{ps, :closed}` to `to` once `ps` is gone, so the receiver can rely
  on `Process.alive?(ps) == false`. `ps` is the calling process.
  """
  @spec notify_when_down(pid() | nil) :: :ok
  def notify_when_down(nil), do: :ok

  def notify_when_down(to) do
    server = self()

    spawn(fn ->
      ref = Process.monitor(server)

      receive do
        {:DOWN, ^ref, :process, _, _} -> send(to, {server, :closed})
      end
    end)

    :ok
  end

  @doc "Maps an exit frame's status to the exit reason owners see."
  @spec exit_reason({:status, non_neg_integer()} | {:signal, pos_integer()}) ::
          ProtonStream.exit_reason()
  def exit_reason({:status, 0}), do: :normal
  def exit_reason({:status, status}), do: {:exit_status, status}
  def exit_reason({:signal, signum}), do: {:signal, signum}
end
