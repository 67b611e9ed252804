defmodule ProtonStream.Options do
  @moduledoc """
  Validates and normalizes the options of `ProtonStream.open/3` and
  `ProtonStream.start_link/5`.

  Everything is checked in the calling process before any process or port is
  started, so a mistake raises right where it was made: `ArgumentError` with a
  message that names the offending option, or `ErlangError` with reason
  `:enoent` when the command is not found (as `System.cmd/3` and proton_stream
  do). Call `validate/4` directly to check options without running anything.

  ## Options

    * `:cd` - directory to run the command in (binary)
    * `:env` - enumerable of `{key, value}` UTF-8 binaries added to the environment;
      a `nil` or `false` value removes the variable
    * `:arg0` - the `argv[0]` the command sees (binary)
    * `:cgroup_controllers` - list of cgroup controllers (binaries) to put the
      command under, e.g. `["memory", "cpu"]`
    * `:cgroup_path` - the cgroup (relative to each controller's root) to create
      for the command; it is removed when the command is gone
    * `:cgroup_base` - an existing cgroup under which a fresh random
      `:cgroup_path` is created (`base <> "/" <> 8 hex digits`); mutually
      exclusive with `:cgroup_path`
    * `:cgroup_sets` - list of `{controller, key, value}` written into the new
      cgroup before the command starts, e.g.
      `{"memory", "memory.limit_in_bytes", "268435456"}`. The controller must be
      in `:cgroup_controllers` and be the key's prefix.
    * `:delay_to_sigkill` - milliseconds between SIGTERM and SIGKILL when the
      command is terminated (non-negative integer, default 500)
    * `:uid` / `:gid` - run as this user / group (integer id or binary name)
    * `:stdio_window` - flow-control window in bytes (positive integer; default
      ps_port's, 256 KiB)
    * `:stderr_to_stdout` - deliver stderr as stdout data (boolean)
    * `:capture_stderr_only` - deliver only stderr, discard stdout (boolean).
      Given together with `stderr_to_stdout: true` (which proton_stream
      1.8.3 accepts too), `:capture_stderr_only` wins: stdout is discarded
      and stderr arrives as stderr (`{:error, data}`)
    * `:pty` - run the program on a pseudo-terminal (boolean; see
      `ProtonStream.Pty`), with `:pty_size` `{rows, columns}` (default
      `{24, 80}`)
    * `:cgroup` - a map of limits keyed by cgroup v2 names, e.g.
      `%{memory_max: 268435456, cpu_max: {50000, 100000}, pids_max: 100}`,
      translated to v1 files on v1 and hybrid hosts; see `ProtonStream.Cgroup`
    * `:isolated` - `true` runs the program under a `ps_port` of its own (one
      helper process per program, as proton_stream 1.8 does) instead of in
      the VM's shared `ps_port` (the default, see "Shared and isolated
      helpers" in `ProtonStream`); boolean, default `false`; not with `:node`
    * `:parallelism` - passed to `Port.open/2` for the helper's port (boolean);
      it only affects how the VM schedules the port's I/O, and only with
      `isolated: true` (the shared helper's port is opened once, without it)
    * `:stdin_limit` - bytes of stdin that may wait for the program before
      further `{:command, _}` data is refused (positive integer, default
      16 MiB); a refusal is reported, never a silent drop
    * `:node` - run the program on a ps_port node (an atom such as
      `:"ps@build7"`, see `ProtonStream.Node`); `nil` means here, through a
      port
    * `:flow` - with `:node` only: `:queue_len` (default) or `:ack`, how the
      node learns that output was consumed (see "Node mode" in `ProtonStream`)

  A `:cgroup_path`/`:cgroup_base` without `:cgroup_controllers` creates no
  cgroup, as in proton_stream.

  With `:node`, the command is not looked up here: the node resolves it on
  its own `PATH`, so `validate/4` keeps it as given. The node's own limits
  are checked here too: `:delay_to_sigkill` at most #{ProtonStream.Limits.fetch!(:delay_to_sigkill_max_ms)},
  `:stdio_window` at most #{ProtonStream.Limits.fetch!(:stdio_window_max)} bytes,
  `:stdin_limit` at most #{ProtonStream.Limits.fetch!(:stdin_limit_max)} bytes
  (`ProtonStream.Limits`).

  ## ProtonStream.Node's options

  `validate/2` checks the options of `ProtonStream.Node.start_link/1` (see
  there) the same way and with the same words: a message naming
  `ProtonStream.Node` and the offending option.
  """

  @typedoc """
  The normalized options: always `:command` (the absolute path of the program;
  with `:node`, the command as given) and `:args`, plus every option that was
  given (`node: nil` is dropped). `:env` is a list of charlist
  pairs (`{~c"KEY", ~c"value"}` or `{~c"KEY", false}` to unset), `:cgroup_base`
  has been turned into a random `:cgroup_path`, `:cgroup_sets` values are
  binaries.
  """
  @type t() :: %{
          required(:command) => binary(),
          required(:args) => [binary()],
          optional(:cd) => binary(),
          optional(:env) => [{charlist(), charlist() | false}],
          optional(:arg0) => binary(),
          optional(:cgroup_controllers) => [binary()],
          optional(:cgroup_path) => binary(),
          optional(:cgroup_base) => binary(),
          optional(:cgroup_sets) => [{binary(), binary(), binary()}],
          optional(:delay_to_sigkill) => non_neg_integer(),
          optional(:uid) => non_neg_integer() | binary(),
          optional(:gid) => non_neg_integer() | binary(),
          optional(:stdio_window) => pos_integer(),
          optional(:stderr_to_stdout) => boolean(),
          optional(:capture_stderr_only) => boolean(),
          optional(:parallelism) => boolean(),
          optional(:isolated) => boolean(),
          optional(:stdin_limit) => pos_integer(),
          optional(:node) => node(),
          optional(:flow) => :queue_len | :ack,
          optional(:cgroup) => ProtonStream.Cgroup.config(),
          optional(:pty) => boolean(),
          optional(:pty_size) => {pos_integer(), pos_integer()}
        }

  # The kernel takes at most this many bytes, with the final NUL, for one
  # argument or environment string (MAX_ARG_STRLEN); a longer one fails the
  # exec (in port mode that of ps_port, with only an exit status to show).
  @max_arg_strlen 131_072

  @doc """
  Validates `opts` for running `command` with `args` and returns the
  normalized map (see `t:t/0`).

  The first argument is the context: `:stream` for `ProtonStream.open/3`,
  `:callback` for `ProtonStream.start_link/5`, which also refuses `:flow`
  with `:node` (callback mode always uses `flow: :ack`: the callbacks
  acknowledge); `validate/2` checks the options of `ProtonStream.Node`.
  Raises `ArgumentError` for an unknown option, a value of the wrong type,
  a non-binary argument, a NUL byte in the command or an argument, or both `:cgroup_path` and `:cgroup_base`; raises `ErlangError`
  with reason `:enoent`, and the program and the `PATH` searched in its
  message, when there is no `command` to run (looked up as `execvp(3)`
  does, on `:env`'s `PATH` when it sets one, relative paths from `:cd`; see
  `ProtonStream.SpawnErrors.resolve!/2`). Not checked with `:node`: the
  node looks the command up. With `pty: true` the result runs `script`
  (see `ProtonStream.Pty`).
  """
  @spec validate(:stream | :callback, binary(), [binary()], keyword()) :: t()
  def validate(:callback, command, args, opts) do
    case validate(:stream, command, args, opts) do
      %{node: _, flow: _} ->
        raise ArgumentError,
              "invalid option :flow: callback mode always uses flow: :ack (the callbacks acknowledge)"

      options ->
        options
    end
  end

  def validate(:stream, command, args, opts) do
    check_command!(command)
    check_args!(args)
    check_opts!(:stream, opts)

    options =
      opts
      |> Enum.reduce(%{command: command, args: args}, &validate_option/2)
      |> apply_cgroup_map()
      |> check_combinations!()
      |> check_node_limits!()
      |> resolve_cgroup_path()

    if Map.has_key?(options, :node) do
      ProtonStream.Pty.wrap(options)
    else
      ProtonStream.Pty.wrap(%{
        options
        | command: ProtonStream.SpawnErrors.resolve!(command, options)
      })
    end
  end

  # ps_port node's --max-request bounds.
  @max_request_min ProtonStream.Limits.fetch!(:max_request_min)
  @max_request_max ProtonStream.Limits.fetch!(:max_request_max)

  # The options of ProtonStream.Node.start_link/1.
  @node_options [
    :allow,
    :allow_any,
    :allow_env,
    :allow_uid,
    :allow_gid,
    :max_request,
    :name,
    :cgroup_base,
    :max_children,
    :port,
    :shutdown_timeout,
    :start_timeout,
    :start_distribution,
    :tls,
    :server_name,
    :id
  ]

  @doc """
  Validates the options of `ProtonStream.Node.start_link/1` (the context
  `:node`) and returns them unchanged.

  Raises `ArgumentError`, naming the option, for an unknown option or a
  value of the wrong type, when neither `:allow` nor `allow_any: true` is
  given (a node must be told which programs owners may run), or when both
  are.
  """
  @spec validate(:node, keyword()) :: keyword()
  def validate(:node, opts) do
    check_opts!(:node, opts)

    for {key, value} <- opts do
      if key not in @node_options do
        raise ArgumentError,
              "unknown #{subject(:node)} #{inspect(key)}; known: " <>
                Enum.map_join(@node_options, ", ", &inspect/1)
      end

      check_node_option!(key, value)
    end

    case {Keyword.has_key?(opts, :allow), opts[:allow_any] == true} do
      {true, true} ->
        raise ArgumentError, "ProtonStream.Node: :allow and allow_any: true exclude each other"

      {false, false} ->
        raise ArgumentError,
              "ProtonStream.Node: say which programs owners may run: " <>
                "allow: [\"/usr/bin/*\", ...] (globs on absolute paths) or allow_any: true"

      _ ->
        opts
    end
  end

  defp check_node_option!(:allow, patterns) do
    if not (is_list(patterns) and patterns != [] and
              Enum.all?(patterns, &(is_binary(&1) and String.starts_with?(&1, "/")))) do
      invalid!(
        :node,
        :allow,
        patterns,
        "a non-empty list of absolute path globs like \"/usr/bin/*\""
      )
    end
  end

  defp check_node_option!(:allow_any, value) when is_boolean(value), do: :ok

  defp check_node_option!(:allow_env, names) do
    if not (is_list(names) and
              Enum.all?(names, &(is_binary(&1) and &1 != "" and not String.contains?(&1, "=")))) do
      invalid!(
        :node,
        :allow_env,
        names,
        "a list of variable names or globs like \"LD_LIBRARY_PATH\" or \"LD_*\""
      )
    end
  end

  defp check_node_option!(key, ids) when key in [:allow_uid, :allow_gid] do
    valid? =
      is_list(ids) and
        Enum.all?(ids, fn
          id when is_integer(id) -> id >= 0
          id when is_binary(id) -> id != ""
          _ -> false
        end)

    if not valid?,
      do:
        invalid!(:node, key, ids, "a list of names, non-negative integers or \"LOW-HIGH\" ranges")
  end

  defp check_node_option!(:max_request, n)
       when is_integer(n) and n in @max_request_min..@max_request_max,
       do: :ok

  defp check_node_option!(:start_distribution, value) when is_boolean(value), do: :ok

  defp check_node_option!(:start_distribution, value) when is_atom(value) do
    if not String.contains?(Atom.to_string(value), "@"),
      do:
        invalid!(:node, :start_distribution, value, "true or a node name like :\"app@127.0.0.1\"")
  end

  defp check_node_option!(:name, name) when is_atom(name) or is_binary(name) do
    if not Regex.match?(~r/\A[A-Za-z0-9_.-]+(@[A-Za-z0-9_.-]+)?\z/, to_string(name)),
      do: invalid!(:node, :name, name, "NAME or NAME@HOST (letters, digits, _ . -)")
  end

  defp check_node_option!(:cgroup_base, base) when is_binary(base) and base != "", do: :ok

  defp check_node_option!(:tls, tls) do
    valid? =
      Keyword.keyword?(tls) and Keyword.has_key?(tls, :certfile) and
        Keyword.has_key?(tls, :keyfile) and
        Enum.all?(tls, fn {key, path} ->
          key in [:certfile, :keyfile, :cacertfile] and is_binary(path) and path != ""
        end)

    if not valid? do
      invalid!(
        :node,
        :tls,
        tls,
        "[certfile: path, keyfile: path] and optionally cacertfile: path (PEM files; paths as strings)"
      )
    end
  end

  defp check_node_option!(key, n)
       when key in [:max_children, :shutdown_timeout, :start_timeout] and is_integer(n) and n >= 0,
       do: :ok

  defp check_node_option!(:port, n) when is_integer(n) and n in 0..65_535, do: :ok
  defp check_node_option!(key, _value) when key in [:server_name, :id], do: :ok

  defp check_node_option!(key, value),
    do: invalid!(:node, key, value, "see ProtonStream.Node's options")

  defp check_command!(command) when is_binary(command) do
    if String.contains?(command, "\0") do
      raise ArgumentError,
            "cannot execute ProtonStream.open/3 for program with null byte, got: #{inspect(command)}"
    end
  end

  defp check_command!(command) do
    raise ArgumentError, "the command must be a binary, got: #{inspect(command)}"
  end

  defp check_args!(args) when is_list(args) do
    if not Enum.all?(args, &is_binary/1) do
      raise ArgumentError,
            "all arguments for ProtonStream.open/3 must be binaries, got: #{inspect(args)}"
    end

    if Enum.any?(args, &String.contains?(&1, "\0")) do
      raise ArgumentError, "arguments must not contain null bytes, got: #{inspect(args)}"
    end

    if long = Enum.find(args, &(byte_size(&1) >= @max_arg_strlen)) do
      raise ArgumentError,
            "an argument of #{byte_size(long)} bytes is longer than the " <>
              "#{@max_arg_strlen - 1} the kernel takes for one argument"
    end
  end

  defp check_args!(args) do
    raise ArgumentError, "the arguments must be a list of binaries, got: #{inspect(args)}"
  end

  defp check_opts!(:stream, opts) when is_list(opts), do: :ok

  defp check_opts!(:node, opts) when is_list(opts) do
    if not Keyword.keyword?(opts), do: not_keywords!(:node, opts)
  end

  defp check_opts!(context, opts), do: not_keywords!(context, opts)

  defp not_keywords!(context, opts) do
    raise ArgumentError, "#{subject(context)}s must be a keyword list, got: #{inspect(opts)}"
  end

  defp validate_option({:node, nil}, acc), do: acc

  defp validate_option({key, _value} = opt, acc) when is_atom(key) do
    Map.put(acc, key, normalize(opt))
  end

  defp validate_option(other, _acc) do
    raise ArgumentError, "options must be a keyword list, got element: #{inspect(other)}"
  end

  defp normalize({key, value}) when key in [:cd, :arg0, :cgroup_path, :cgroup_base] do
    if is_binary(value) and value != "" and not String.contains?(value, "\0") do
      value
    else
      invalid!(key, value, "a non-empty binary without null bytes")
    end
  end

  defp normalize({key, value})
       when key in [:stderr_to_stdout, :capture_stderr_only, :parallelism, :isolated] do
    if is_boolean(value), do: value, else: invalid!(key, value, "a boolean")
  end

  defp normalize({:delay_to_sigkill, ms}) when is_integer(ms) and ms >= 0, do: ms

  defp normalize({:delay_to_sigkill = key, value}),
    do: invalid!(key, value, "a non-negative integer (milliseconds)")

  defp normalize({:stdio_window, bytes}) when is_integer(bytes) and bytes > 0, do: bytes

  defp normalize({:stdio_window = key, value}),
    do: invalid!(key, value, "a positive integer (bytes)")

  defp normalize({:stdin_limit, bytes}) when is_integer(bytes) and bytes > 0, do: bytes

  defp normalize({:stdin_limit = key, value}),
    do: invalid!(key, value, "a positive integer (bytes)")

  defp normalize({:node, node}) when is_atom(node) and node not in [true, false] do
    if String.contains?(Atom.to_string(node), "@") do
      node
    else
      invalid!(:node, node, "a node name like :\"ps@host\"")
    end
  end

  defp normalize({:node = key, value}), do: invalid!(key, value, "a node name like :\"ps@host\"")

  defp normalize({:flow, flow}) when flow in [:queue_len, :ack], do: flow
  defp normalize({:flow = key, value}), do: invalid!(key, value, ":queue_len or :ack")

  defp normalize({key, id}) when key in [:uid, :gid] and is_integer(id) and id >= 0, do: id

  defp normalize({key, name}) when key in [:uid, :gid] and is_binary(name) and name != "" do
    if String.contains?(name, "\0"),
      do: invalid!(key, name, "a name without null bytes"),
      else: name
  end

  defp normalize({key, value}) when key in [:uid, :gid],
    do: invalid!(key, value, "a non-negative integer id or a binary name")

  defp normalize({:cgroup_controllers = key, list}) do
    if is_list(list) and Enum.all?(list, &controller?/1) do
      list
    else
      invalid!(key, list, "a list of controller names (binaries), like [\"memory\", \"cpu\"]")
    end
  end

  defp normalize({:cgroup_sets = key, sets}) when is_list(sets),
    do: Enum.map(sets, &cgroup_set!(key, &1))

  defp normalize({:cgroup_sets = key, value}),
    do: invalid!(key, value, "a list of {controller, key, value}")

  defp normalize({:env = key, env}) do
    if Enumerable.impl_for(env) == nil or is_binary(env) do
      invalid!(key, env, "an enumerable of {key, value} binaries")
    end

    Enum.map(env, &env_pair!/1)
  end

  defp normalize({:pty, value}) when is_boolean(value), do: value
  defp normalize({:pty = key, value}), do: invalid!(key, value, "a boolean")

  defp normalize({:pty_size, {rows, cols} = size})
       when is_integer(rows) and rows > 0 and is_integer(cols) and cols > 0,
       do: size

  defp normalize({:pty_size = key, value}),
    do: invalid!(key, value, "{rows, columns}, positive integers")

  defp normalize({:cgroup, config}) do
    # Checked (and raising, naming the key) here; applied by apply_cgroup_map/1.
    ProtonStream.Cgroup.to_options(config)
    config
  end

  defp normalize({key, value}) do
    raise ArgumentError, "invalid option #{inspect(key)} with value #{inspect(value)}"
  end

  defp controller?(name), do: is_binary(name) and Regex.match?(~r/\A[a-z0-9_]+\z/, name)

  defp cgroup_set!(key, {controller, var, value} = set) do
    cond do
      not controller?(controller) ->
        invalid!(key, set, "the controller to be a controller name (binary)")

      not (is_binary(var) and Regex.match?(~r/\A[A-Za-z0-9_]+\.[A-Za-z0-9_.]+\z/, var)) ->
        invalid!(key, set, "the key to be a cgroup file name like \"memory.limit_in_bytes\"")

      hd(String.split(var, ".", parts: 2)) != controller ->
        invalid!(key, set, "the key to start with the controller's name (#{controller}.)")

      is_integer(value) ->
        {controller, var, Integer.to_string(value)}

      is_binary(value) and not String.contains?(value, ["\0", "\n"]) ->
        {controller, var, value}

      true ->
        invalid!(key, set, "the value to be a binary or an integer")
    end
  end

  defp cgroup_set!(key, other),
    do: invalid!(key, other, "entries of the form {controller, key, value}")

  defp env_pair!({key, value} = pair) do
    if not (is_binary(key) and key != "" and not String.contains?(key, ["=", "\0"]) and
              String.valid?(key)) do
      raise ArgumentError,
            "invalid option :env: invalid environment key #{inspect(pair)}; " <>
              "keys must be non-empty UTF-8 binaries without \"=\" or null bytes"
    end

    case value do
      v when v in [nil, false] ->
        {String.to_charlist(key), false}

      v when is_binary(v) ->
        if String.contains?(v, "\0") do
          raise ArgumentError, "invalid option :env: null byte in the value of #{inspect(key)}"
        end

        if not String.valid?(v) do
          raise ArgumentError,
                "invalid option :env: the value of #{inspect(key)} is not valid UTF-8"
        end

        if byte_size(key) + 1 + byte_size(v) >= @max_arg_strlen do
          raise ArgumentError,
                "invalid option :env: #{inspect(key)}=... is #{byte_size(key) + 1 + byte_size(v)} bytes; " <>
                  "the kernel takes at most #{@max_arg_strlen - 1} for one environment string"
        end

        {String.to_charlist(key), String.to_charlist(v)}

      _ ->
        raise ArgumentError,
              "invalid option :env: invalid environment key-value #{inspect(pair)}; " <>
                "values must be binaries, or nil/false to unset"
    end
  end

  defp env_pair!(other) do
    raise ArgumentError, "invalid option :env: invalid environment key-value #{inspect(other)}"
  end

  # The :cgroup map (ProtonStream.Cgroup) adds controllers and sets, and a
  # group of its own when no :cgroup_path or :cgroup_base was given.
  defp apply_cgroup_map(%{cgroup: config} = opts) do
    {controllers, sets} = ProtonStream.Cgroup.to_options(config)

    opts
    |> Map.update(:cgroup_controllers, controllers, &Enum.uniq(&1 ++ controllers))
    |> Map.update(:cgroup_sets, sets, &(&1 ++ sets))
    |> then(fn opts ->
      if Map.has_key?(opts, :cgroup_path) or Map.has_key?(opts, :cgroup_base),
        do: opts,
        else: Map.put(opts, :cgroup_base, "proton_stream")
    end)
  end

  defp apply_cgroup_map(opts), do: opts

  defp check_combinations!(%{cgroup_path: _, cgroup_base: _}) do
    raise ArgumentError,
          "invalid options :cgroup_path and :cgroup_base: cannot specify both a cgroup_path and a cgroup_base"
  end

  # proton_stream 1.8.3 accepts the pair; :capture_stderr_only wins (stdout
  # is discarded, stderr arrives as stderr).
  defp check_combinations!(%{stderr_to_stdout: true, capture_stderr_only: true} = opts),
    do: check_combinations!(Map.delete(opts, :stderr_to_stdout))

  defp check_combinations!(%{isolated: true, node: _}) do
    raise ArgumentError,
          "invalid options :isolated and :node: isolated: true asks for a ps_port of this VM " <>
            "for the program, :node runs it on a ps_port node; give one of them"
  end

  defp check_combinations!(%{cgroup_sets: [_ | _] = sets} = opts) do
    controllers = Map.get(opts, :cgroup_controllers, [])

    case Enum.find(sets, fn {controller, _, _} -> controller not in controllers end) do
      nil ->
        check_group!(opts)

      {controller, _, _} = set ->
        raise ArgumentError,
              "invalid option :cgroup_sets: #{inspect(set)} needs #{inspect(controller)} " <>
                "in :cgroup_controllers (got #{inspect(controllers)})"
    end
  end

  defp check_combinations!(opts), do: check_group!(opts)

  defp check_group!(%{cgroup_controllers: [_ | _]} = opts)
       when not is_map_key(opts, :cgroup_path) and not is_map_key(opts, :cgroup_base) do
    raise ArgumentError,
          "invalid option :cgroup_controllers: it needs :cgroup_path or :cgroup_base"
  end

  defp check_group!(opts), do: opts

  # A ps_port node refuses values past these; say so here, naming the option.
  @node_limits [
    delay_to_sigkill: ProtonStream.Limits.fetch!(:delay_to_sigkill_max_ms),
    stdio_window: ProtonStream.Limits.fetch!(:stdio_window_max),
    stdin_limit: ProtonStream.Limits.fetch!(:stdin_limit_max)
  ]

  defp check_node_limits!(%{node: _} = opts) do
    for {key, max} <- @node_limits,
        value = Map.get(opts, key),
        is_integer(value) and value > max,
        do: invalid!(key, value, "at most #{max} with :node")

    opts
  end

  defp check_node_limits!(%{flow: _}) do
    raise ArgumentError, "invalid option :flow: it applies to node mode only (give :node too)"
  end

  defp check_node_limits!(opts), do: opts

  # :cgroup_base stays in the map (as in proton_stream); :cgroup_path is what is used.
  defp resolve_cgroup_path(%{cgroup_base: base} = opts) do
    suffix = Base.encode16(:rand.bytes(4), case: :lower)

    Map.put(opts, :cgroup_path, String.trim_trailing(base, "/") <> "/" <> suffix)
  end

  defp resolve_cgroup_path(opts), do: opts

  defp invalid!(key, value, expected), do: invalid!(:stream, key, value, expected)

  defp invalid!(context, key, value, expected) do
    raise ArgumentError,
          "invalid #{subject(context)} #{inspect(key)} with value #{inspect(value)}: expected #{expected}"
  end

  # What the options of a context are called in error messages.
  defp subject(:stream), do: "option"
  defp subject(:node), do: "ProtonStream.Node option"
end
