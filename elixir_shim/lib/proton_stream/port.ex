defmodule ProtonStream.Port do
  @moduledoc """
  The wire protocol between `ProtonStream.Server` and the `ps_port` helper.

  `ps_port --packet` is opened as an Erlang port with `{:packet, 4}`; every frame
  in either direction is one term in the external term format (see
  `docs/protocol.md` in the repository). This module builds the port's command
  line from validated options (`ProtonStream.Options`), opens it, and encodes
  and decodes frames.

  Hot-path notes: output frames (`{:stdout, binary}` / `{:stderr, binary}`) are
  matched on their fixed header, so the payload is a sub-binary of the port
  message and is never copied; `{:command, binary}` frames are sent as iodata
  (header plus the caller's binary), also without a copy.
  """

  @typedoc "A decoded frame from ps_port."
  @type frame ::
          {:started, pos_integer()}
          | {:spawn_error, atom(), binary()}
          | {:stdout, binary()}
          | {:stderr, binary()}
          | {:error, atom(), binary()}
          | {:oom_killed, non_neg_integer()}
          | {:stdin_written, pos_integer()}
          | {:exit, {:status, non_neg_integer()} | {:signal, pos_integer()}}

  # ps_port refuses a frame longer than this (its length prefix's value).
  @max_frame ProtonStream.Limits.fetch!(:max_frame)
  @command_header_size byte_size(<<131, 104, 2, 119, 7, "command", 109, 0::32>>)

  @doc """
  Absolute path of the `ps_port` executable inside this application's `priv/`.
  """
  @spec executable() :: binary()
  def executable, do: Application.app_dir(:proton_stream, "priv/ps_port")

  @doc """
  Absolute path of the executable `open/1` runs for the validated `options`:
  `priv/ps_port_lean` (port mode without cgroups, about 1 ms quicker to
  start: it does not link the cgroup backend) when they ask for no cgroup,
  `executable/0` otherwise.
  """
  @spec executable(map()) :: binary()
  def executable(%{cgroup_controllers: [_ | _]}), do: executable()
  def executable(_options), do: Application.app_dir(:proton_stream, "priv/ps_port_lean")

  @doc """
  Opens `ps_port --packet` for the validated `options` and returns the port.
  The port is linked to the calling process, which becomes its owner.

  After its final `{:exit, _}` frame ps_port waits for the port to be closed
  (so late acks never meet a closed pipe), then removes the program's cgroup
  and exits.
  """
  @spec open(map()) :: port()
  def open(options) do
    port_opts = [:binary, {:packet, 4}, :exit_status, :use_stdio, {:args, args(options)}]

    port_opts =
      case Map.fetch(options, :parallelism) do
        {:ok, bool} -> [{:parallelism, bool} | port_opts]
        :error -> port_opts
      end

    Port.open({:spawn_executable, executable(options)}, port_opts)
  end

  @doc """
  The command line (after the program name) for ps_port from validated options.
  """
  @spec args(map()) :: [binary()]
  def args(options) do
    ["--packet" | group_args(options)] ++
      Enum.flat_map(
        [
          :delay_to_sigkill,
          :cgroup_controllers,
          :cgroup_sets,
          :uid,
          :gid,
          :stdio_window,
          :stdin_limit,
          :stdin_ack,
          :arg0,
          :stderr_to_stdout,
          :capture_stderr_only,
          :cd,
          :env
        ],
        &flag(&1, Map.get(options, &1))
      ) ++ ["--", options.command | options.args]
  end

  defp flag(_key, nil), do: []
  defp flag(:delay_to_sigkill, ms), do: ["--delay-to-sigkill", Integer.to_string(ms)]

  defp flag(:cgroup_controllers, []), do: []

  defp flag(:cgroup_controllers, controllers) do
    Enum.flat_map(controllers, &["--controller", &1])
  end

  defp flag(:cgroup_sets, sets) do
    Enum.flat_map(sets, fn {_controller, key, value} -> ["--set", key <> "=" <> value] end)
  end

  defp flag(:uid, id), do: ["--uid", to_string(id)]
  defp flag(:gid, id), do: ["--gid", to_string(id)]
  defp flag(:stdio_window, bytes), do: ["--stdio-window", Integer.to_string(bytes)]
  defp flag(:stdin_limit, bytes), do: ["--stdin-limit", Integer.to_string(bytes)]
  defp flag(:stdin_ack, true), do: ["--stdin-ack"]
  defp flag(:arg0, arg0), do: ["--arg0", arg0]
  defp flag(:stderr_to_stdout, true), do: ["--capture-stderr"]
  defp flag(:capture_stderr_only, true), do: ["--capture-stderr-only"]
  defp flag(:cd, dir), do: ["--cd", dir]
  defp flag(:env, env), do: Enum.flat_map(env, &env_flag/1)
  defp flag(_key, false), do: []

  defp env_flag({key, false}), do: ["--unset", List.to_string(key)]
  defp env_flag({key, value}), do: ["--env", List.to_string(key) <> "=" <> List.to_string(value)]

  # A cgroup path without controllers creates no group (as upstream), and
  # ps_port wants --group only together with --controller.
  defp group_args(%{cgroup_path: path, cgroup_controllers: [_ | _]}), do: ["--group", path]
  defp group_args(_options), do: []

  @doc """
  Decodes one frame from ps_port.

  Output frames are matched on their header so the payload is not copied.
  Raises `ArgumentError` for a frame that is not valid external term format.
  """
  @spec decode(binary()) :: frame()
  def decode(<<131, 104, 2, 119, 6, "stdout", 109, size::32, data::binary-size(size)>>),
    do: {:stdout, data}

  def decode(<<131, 104, 2, 119, 6, "stderr", 109, size::32, data::binary-size(size)>>),
    do: {:stderr, data}

  # ps_port is our own trusted helper; its reasons are errno names, which may be
  # atoms this node has not seen yet, so the decode is not [:safe].
  def decode(frame), do: :erlang.binary_to_term(frame)

  @doc """
  The largest stdin payload one `{:command, binary}` frame can carry: 64 MiB
  (ps_port's frame limit) minus the frame's header.
  """
  @spec max_command() :: pos_integer()
  def max_command, do: @max_frame - @command_header_size

  @doc """
  Sends stdin data to ps_port as one `{:command, binary}` frame, which ps_port
  takes or refuses whole (the caller keeps `data` within `max_command/0`).
  Returns `:ok`, or `:closed` when the port is already gone.
  """
  @spec command(port(), binary()) :: :ok | :closed
  def command(port, data) do
    send_frame(port, [<<131, 104, 2, 119, 7, "command", 109, byte_size(data)::32>>, data])
  end

  @doc "Tells ps_port that `bytes` of output have been passed on."
  @spec ack(port(), non_neg_integer()) :: :ok | :closed
  def ack(port, bytes), do: send_frame(port, :erlang.term_to_binary({:ack, bytes}))

  @doc "Asks ps_port to close the child's stdin once queued data is written."
  @spec eof(port()) :: :ok | :closed
  def eof(port), do: send_frame(port, :erlang.term_to_binary(:eof))

  @doc "Asks ps_port to send signal `signum` to the child."
  @spec signal(port(), 1..64) :: :ok | :closed
  def signal(port, signum), do: send_frame(port, :erlang.term_to_binary({:signal, signum}))

  @doc "Closes the port; ps_port then terminates the child and its descendants."
  @spec close(port() | nil) :: :ok
  def close(nil), do: :ok

  def close(port) do
    Port.close(port)
    :ok
  rescue
    ArgumentError -> :ok
  end

  @doc """
  Writes one frame (iodata, without its length prefix) to a ps_port port,
  `--packet` or `--shared`. Returns `:ok`, or `:closed` when the port is
  already gone (its exit message is then on its way to its owner).
  """
  @spec send_frame(port(), iodata()) :: :ok | :closed
  def send_frame(port, iodata) do
    Port.command(port, iodata)
    :ok
  rescue
    ArgumentError -> :closed
  end
end
