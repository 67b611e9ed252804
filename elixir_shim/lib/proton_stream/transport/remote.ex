defmodule ProtonStream.Transport.Remote do
  @moduledoc """
  Callback mode with `node: node`: the server owns the program's pid on a
  ps_port node, opened with `flow: :ack` so that the callbacks' speed bounds
  the data in flight (`ProtonStream.Remote` holds the node's protocol).
  Message mode on a node needs no server: see `ProtonStream.Remote`.

  The server monitors the node's pid: if it goes away without reporting the
  program's exit (the connection was lost), the exit reason is
  `{:ps_port_exited, reason}`. A command goes as one message, taken or
  refused whole, as `ProtonStream.command/2` does in node mode.
  """

  @behaviour ProtonStream.Transport

  require Logger
  alias ProtonStream.Remote

  defstruct [:pid, :ref, :command]

  @call_timeout 15_000

  @impl ProtonStream.Transport
  def open(options, _owner) do
    case Remote.open(Map.put(options, :flow, :ack), self()) do
      {:ok, remote} ->
        ref = Process.monitor(remote)
        h = %__MODULE__{pid: remote, ref: ref, command: options.command}

        # A program that ended at once has sent its {:EXIT, _, _} to us
        # before its pid died (the call then exits :noproc or :normal); that
        # exit is reported from the mailbox as usual, and os_pid stays nil.
        case remote_os_pid(remote) do
          {:ok, os_pid} ->
            {:ok, h, os_pid}

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

  defp remote_os_pid(remote) do
    {:ok, GenServer.call(remote, :"$os_pid", @call_timeout)}
  catch
    :exit, {reason, _} when reason in [:noproc, :normal] -> {:ok, nil}
    :exit, {reason, _} -> {:error, inspect(reason)}
  end

  @impl ProtonStream.Transport
  def event({remote, message}, %__MODULE__{pid: remote}) do
    case message do
      {:data, data} when is_binary(data) -> {:event, {:stdout, data}}
      {:error, data} when is_binary(data) -> {:event, {:stderr, data}}
      {:error, reason, text} -> {:event, {:error, reason, text}}
      {:oom_killed, count} -> {:event, {:oom_killed, count}}
      {:stdin_written, bytes} -> {:event, {:stdin_written, bytes}}
      # Replies to our :close (we are stopping anyway) and :connect (never sent).
      reply when reply in [:closed, :connected] -> :ignore
      other -> {:event, other}
    end
  end

  # The last message: the program and its tree are gone (and its cgroup).
  def event({:EXIT, remote, reason}, %__MODULE__{pid: remote} = h) do
    Process.demonitor(h.ref, [:flush])
    {:event, {:exit, reason}}
  end

  def event({:DOWN, ref, :process, _, reason}, %__MODULE__{ref: ref} = h) do
    Logger.error(
      "ProtonStream: the ps_port node's process for #{h.command} went away " <>
        "(#{inspect(reason)}) without reporting the program's exit"
    )

    {:event, {:exit, {:ps_port_exited, reason}}}
  end

  def event(_message, _handle), do: :unknown

  @impl ProtonStream.Transport
  def command(h, data), do: Remote.command(h.pid, self(), data)

  @impl ProtonStream.Transport
  def eof(h), do: request(h, :eof)

  @impl ProtonStream.Transport
  def signal(h, signum), do: request(h, {:signal, signum})

  @impl ProtonStream.Transport
  def ack(h, bytes), do: request(h, {:ack, bytes})

  # The node would also notice the server's end through its monitor.
  @impl ProtonStream.Transport
  def close(h, reply_to) do
    request(h, :close)
    ProtonStream.Transport.notify_when_down(reply_to)
  end

  defp request(h, request) do
    send(h.pid, {self(), request})
    :ok
  end
end
