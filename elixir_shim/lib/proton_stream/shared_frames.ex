defmodule ProtonStream.SharedFrames do
  @moduledoc """
  The frames of `ps_port --shared` (docs/protocol.md, "Shared mode"): one
  `{packet, 4}` port carries every child of the VM, each frame tagged with
  the child's id.

  Frames to ps_port are built by hand with the id as `INTEGER_EXT`, and the
  stdin payload is passed as iodata, so a command is never copied. Output
  frames from ps_port are matched on their fixed header (ps_port always
  writes ids as `INTEGER_EXT`), so the payload stays a sub-binary of the
  port's message.
  """

  @typedoc "A child's id on the shared port: 1..2147483647, never reused."
  @type id :: pos_integer()

  @typedoc "A decoded frame from ps_port."
  @type frame ::
          {:stdout, id(), binary()}
          | {:stderr, id(), binary()}
          | {:started, id(), pos_integer()}
          | {:spawn_error, id(), atom(), binary()}
          | {:error, id(), atom(), binary()}
          | {:error, atom(), binary()}
          | {:oom_killed, id(), non_neg_integer()}
          | {:stdin_written, id(), pos_integer()}
          | {:exit, id(), {:status, non_neg_integer()} | {:signal, pos_integer()}}

  # ps_port refuses a frame longer than this (its length prefix's value).
  @max_frame ProtonStream.Limits.fetch!(:max_frame)
  @command_header_size byte_size(<<131, 104, 3, 119, 7, "command", 98, 0::32, 109, 0::32>>)

  @doc """
  The largest stdin payload one `{:command, id, data}` frame can carry: 64 MiB
  (ps_port's frame limit) minus the frame's header.
  """
  @spec max_command() :: pos_integer()
  def max_command, do: @max_frame - @command_header_size

  @doc "`{:command, id, data}` as iodata (the header, then `data` uncopied)."
  @spec command(id(), binary()) :: iodata()
  def command(id, data) do
    [<<131, 104, 3, 119, 7, "command", 98, id::32, 109, byte_size(data)::32>>, data]
  end

  @doc "`{:ack, id, bytes}`."
  @spec ack(id(), non_neg_integer()) :: binary()
  def ack(id, bytes) when bytes < 0x80000000,
    do: <<131, 104, 3, 119, 3, "ack", 98, id::32, 98, bytes::32>>

  def ack(id, bytes), do: :erlang.term_to_binary({:ack, id, bytes})

  @doc "`{:eof, id}`."
  @spec eof(id()) :: binary()
  def eof(id), do: <<131, 104, 2, 119, 3, "eof", 98, id::32>>

  @doc "`{:stop, id}`."
  @spec stop(id()) :: binary()
  def stop(id), do: <<131, 104, 2, 119, 4, "stop", 98, id::32>>

  @doc "`{:signal, id, signum}`."
  @spec signal(id(), 1..64) :: binary()
  def signal(id, signum), do: <<131, 104, 3, 119, 6, "signal", 98, id::32, 97, signum>>

  @doc "`{:open, id, opts}` for validated options (`ProtonStream.Options`)."
  @spec open(id(), map()) :: binary()
  def open(id, options), do: :erlang.term_to_binary({:open, id, open_opts(options)})

  @doc "`{:environ, [{name, value}]}` from `:os.getenv/0`'s list."
  @spec environ([charlist()]) :: binary()
  def environ(env) do
    pairs =
      for entry <- env,
          [name, value] <- [:string.split(entry, ~c"=")],
          do: {List.to_string(name), List.to_string(value)}

    :erlang.term_to_binary({:environ, pairs})
  end

  @doc "The open options docs/protocol.md lists, from validated options."
  @spec open_opts(map()) :: [{atom(), term()}]
  def open_opts(options) do
    base = [{:program, options.command}, {:args, options.args}]

    Enum.reduce(
      [
        :arg0,
        :cd,
        :env,
        :uid,
        :gid,
        :delay_to_sigkill,
        :stdio_window,
        :stdin_limit,
        :stdin_ack,
        :stderr_to_stdout,
        :capture_stderr_only,
        :cgroup_controllers
      ],
      base,
      fn key, acc -> opt(key, Map.get(options, key), options) ++ acc end
    )
  end

  defp opt(_key, nil, _options), do: []
  defp opt(_key, false, _options), do: []
  defp opt(key, true, _options), do: [{key, true}]

  defp opt(:env, env, _options) do
    [{:env, Enum.map(env, fn {k, v} -> {List.to_string(k), v && List.to_string(v)} end)}]
  end

  # A cgroup path without controllers creates no group (as proton_stream).
  defp opt(:cgroup_controllers, [], _options), do: []

  defp opt(:cgroup_controllers, controllers, options) do
    sets =
      for {_controller, key, value} <- Map.get(options, :cgroup_sets, []),
          do: key <> "=" <> value

    [
      {:cgroup_controllers, controllers},
      {:cgroup_path, Map.fetch!(options, :cgroup_path)},
      {:cgroup_sets, sets}
    ]
  end

  defp opt(key, value, _options), do: [{key, value}]

  @doc """
  Decodes one frame from ps_port. Output frames are matched on their fixed
  header; anything else goes through `:erlang.binary_to_term/1` (ps_port is
  our own helper; its reasons are errno names this VM may not have seen as
  atoms yet, so the decode is not `[:safe]`).
  """
  @spec decode(binary()) :: frame()
  def decode(
        <<131, 104, 3, 119, 6, "stdout", 98, id::32, 109, size::32, data::binary-size(size)>>
      ),
      do: {:stdout, id, data}

  def decode(
        <<131, 104, 3, 119, 6, "stderr", 98, id::32, 109, size::32, data::binary-size(size)>>
      ),
      do: {:stderr, id, data}

  def decode(frame), do: :erlang.binary_to_term(frame)
end
