defmodule ProtonStream.Transport.Shared do
  @moduledoc """
  The default transport: the program runs in the VM's shared
  `ps_port --shared`, owned by `ProtonStream.SharedPort` (see there for who
  does what). The server writes stdin, `:eof`, signals and acks to the port
  itself; the router sends output straight to a message-mode owner.

  A command is one frame, taken or refused whole by ps_port. A command over
  `ProtonStream.SharedFrames.max_command/0` bytes (64 MiB, ps_port's frame
  limit, minus the header) cannot be one frame: it is refused whole here,
  without writing any of it, as `{:error, :stdin_overflow, message}` (never
  cut: a program must not see half of a command).
  """

  @behaviour ProtonStream.Transport

  alias ProtonStream.SharedFrames, as: Frames
  alias ProtonStream.SharedPort

  defstruct [:id, :port, :router, :router_ref, :counter]

  @open_timeout 15_000

  @impl ProtonStream.Transport
  def open(options, owner) do
    # The words ps_port cannot know: what is wrong with the file.
    options |> start(owner) |> ProtonStream.SpawnErrors.explain_open(options)
  end

  defp start(options, owner) do
    case Process.whereis(SharedPort) do
      nil ->
        {:error,
         {:spawn_error, :noproc,
          "the :proton_stream application is not started (it runs the shared ps_port): " <>
            "start it, e.g. Application.ensure_all_started(:proton_stream), or pass isolated: true"}}

      router ->
        ref = Process.monitor(router)

        {hash, environ} = environ(SharedPort.environ_hash())
        # Message mode's output bytes, counted by the router.
        counter = if owner, do: :counters.new(1, [])

        case call(router, {:open, options, owner, hash, environ, counter}, @open_timeout) do
          {:ok, id, port, os_pid} ->
            h = %__MODULE__{id: id, port: port, router: router, router_ref: ref, counter: counter}
            {:ok, h, os_pid}

          {:error, _} = error ->
            Process.demonitor(ref, [:flush])
            error
        end
    end
  end

  # The VM's environment, hashed, and as an {:environ, _} frame when the
  # router's last one differs. Read in a throwaway process: the environment
  # as charlists is tens of KiB, which would otherwise stay on this
  # (mostly idle) server's heap; the frame is a refc binary, not copied.
  defp environ(last_hash) do
    parent = self()
    ref = make_ref()

    spawn_link(fn ->
      env = :os.getenv()
      hash = :erlang.phash2(env)
      send(parent, {ref, hash, if(hash != last_hash, do: Frames.environ(env))})
    end)

    receive do
      {^ref, hash, environ} -> {hash, environ}
    end
  end

  defp call(router, request, timeout) do
    GenServer.call(router, request, timeout)
  catch
    :exit, {reason, _} ->
      {:error,
       {:spawn_error, :ps_port,
        "the shared ps_port's process did not answer the open: #{inspect(reason)}"}}
  end

  @impl ProtonStream.Transport
  def event({:"$ps_shared", id, event}, %__MODULE__{id: id}), do: {:event, event}

  def event({:DOWN, ref, :process, _, reason}, %__MODULE__{router_ref: ref}),
    do: {:event, {:exit, {:ps_port_exited, {:shared_port_down, reason}}}}

  def event(_message, _handle), do: :unknown

  @impl ProtonStream.Transport
  def command(%__MODULE__{} = h, data) do
    with :ok <- ProtonStream.Transport.fits_frame(data, Frames.max_command()),
         do: write(h, Frames.command(h.id, data))
  end

  @impl ProtonStream.Transport
  def eof(h), do: write(h, Frames.eof(h.id))

  @impl ProtonStream.Transport
  def signal(h, signum), do: write(h, Frames.signal(h.id, signum))

  @impl ProtonStream.Transport
  def ack(h, bytes), do: write(h, Frames.ack(h.id, bytes))

  @impl ProtonStream.Transport
  def output_bytes(%__MODULE__{counter: nil}), do: 0
  def output_bytes(%__MODULE__{counter: counter}), do: :counters.get(counter, 1)

  @impl ProtonStream.Transport
  def connect(h, old_owner, new_owner) do
    case request(h, {:connect, h.id, old_owner, new_owner}) do
      :ok -> :ok
      _gone -> send(old_owner, {self(), :connected})
    end

    :ok
  end

  @impl ProtonStream.Transport
  def close(h, reply_to) do
    case request(h, {:close, h.id, reply_to}) do
      :ok -> :ok
      _gone -> ProtonStream.Transport.notify_when_down(reply_to)
    end
  end

  # A call, so that when it returns the router has stopped forwarding to the
  # old owner, and what it sent before precedes its {ps, :connected} /
  # {ps, :closed}. A router that is gone answers nothing: the caller sends
  # those itself.
  defp request(h, request) do
    GenServer.call(h.router, request, @open_timeout)
  catch
    :exit, _ -> :gone
  end

  # A shared port that is gone: the router tells the server.
  defp write(h, frame) do
    ProtonStream.Port.send_frame(h.port, frame)
    :ok
  end
end
