defmodule ProtonStream.Transport.Isolated do
  @moduledoc """
  `isolated: true`: the program runs under a `ps_port --packet` of its own,
  a port owned by the server (`ProtonStream.Port` holds the wire format).

  The port is linked to the server; when the server ends, the port closes,
  ps_port sees EOF and takes the program's tree down. A command over
  `ProtonStream.Port.max_command/0` bytes (ps_port's 64 MiB frame limit) is
  refused whole, as in the shared transport.
  """

  @behaviour ProtonStream.Transport

  require Logger
  alias ProtonStream.Port, as: PsPort

  defstruct [:port, :command]

  # Headers of ps_port's {:started, _} and {:spawn_error, _, _} frames (atoms
  # as SMALL_ATOM_UTF8_EXT, docs/protocol.md).
  @started_header <<131, 104, 2, 119, 7, "started">>
  @spawn_error_header <<131, 104, 3, 119, 11, "spawn_error">>

  @impl ProtonStream.Transport
  def open(options, _owner) do
    # The words ps_port cannot know: what is wrong with the file.
    options |> start() |> ProtonStream.SpawnErrors.explain_open(options)
  end

  defp start(options) do
    path = PsPort.executable(options)

    # The program's arguments and environment go on ps_port's own command
    # line: refused here, with the sizes, when the kernel would refuse it.
    with true <- File.regular?(path),
         :ok <- ProtonStream.SpawnErrors.check_size([path | PsPort.args(options)], options) do
      await_started(PsPort.open(options), options)
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
  # overtake :started, it stays in the mailbox, in order, for the server.
  defp await_started(port, options) do
    receive do
      {^port, {:data, <<@started_header::binary, _::binary>> = frame}} ->
        {:started, os_pid} = PsPort.decode(frame)
        {:ok, %__MODULE__{port: port, command: options.command}, os_pid}

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

  @impl ProtonStream.Transport
  def event({port, {:data, frame}}, %__MODULE__{port: port}) do
    case PsPort.decode(frame) do
      # The last frame: the program, its tree and its cgroup are gone.
      # ps_port lingers until the port is closed, then exits.
      {:exit, status} ->
        PsPort.close(port)
        {:event, {:exit, ProtonStream.Transport.exit_reason(status)}}

      decoded ->
        {:event, decoded}
    end
  end

  # ps_port died before reporting the program's exit.
  def event({port, {:exit_status, status}}, %__MODULE__{port: port} = h) do
    Logger.error(
      "ProtonStream: ps_port for #{h.command} exited with status #{status} " <>
        "without reporting the program's exit (see its stderr)"
    )

    {:event, {:exit, {:ps_port_exited, status}}}
  end

  def event({:EXIT, port, _reason}, %__MODULE__{port: port}), do: :ignore
  def event(_message, _handle), do: :unknown

  @impl ProtonStream.Transport
  def command(h, data) do
    with :ok <- ProtonStream.Transport.fits_frame(data, PsPort.max_command()),
         do: ok(PsPort.command(h.port, data))
  end

  @impl ProtonStream.Transport
  def eof(h), do: ok(PsPort.eof(h.port))

  @impl ProtonStream.Transport
  def signal(h, signum), do: ok(PsPort.signal(h.port, signum))

  @impl ProtonStream.Transport
  def ack(h, bytes), do: ok(PsPort.ack(h.port, bytes))

  @impl ProtonStream.Transport
  def close(h, reply_to) do
    PsPort.close(h.port)
    ProtonStream.Transport.notify_when_down(reply_to)
  end

  defp ok(_sent_or_closed), do: :ok
end
