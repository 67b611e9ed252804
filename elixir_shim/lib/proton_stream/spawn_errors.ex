defmodule ProtonStream.SpawnErrors do
  @moduledoc """
  Why a program could not be started, in words, for every entry point
  (`ProtonStream.open/3`, `start_link/5`, `cmd/3`, `stream!/3`,
  `ProtonStream.Daemon`) and mode.

  The reason atoms stay those proton_stream 1.8.3 callers match on: a
  program that is not found raises `ErlangError` with `original: :enoent`
  (as `System.cmd/3` does), and the other failures are
  `{:error, {:spawn_error, reason, message}}` (`:eacces`, `:enoent`,
  `:enoexec`, `:e2big`, `:baduser`, `:badgroup`, ...). What this module adds
  are the words: the exception's message says which program was looked up
  where, and a spawn error's message says what is wrong with the file (a
  directory, not executable, a `#!` interpreter that is missing) or how
  big the argument list was.
  """

  import Bitwise

  @typedoc "A spawn error as `open/3` returns it."
  @type spawn_error :: {:spawn_error, atom(), binary()}

  @doc """
  Resolves `command` as `execvp(3)` would, in the child's working directory
  (`:cd`) and with the child's `PATH` (from `:env` when it sets one, else
  this VM's). Returns the absolute path; a path that exists but cannot be
  run is returned too (starting it gives a spawn error that says why).
  Raises `ErlangError` `:enoent`, with the program as given and the `PATH`
  searched in its message, when there is nothing to run.
  """
  @spec resolve!(binary(), map()) :: binary()
  def resolve!(command, options) do
    if String.contains?(command, "/") do
      cd = Path.expand(Map.get(options, :cd, "."))
      path = Path.expand(command, cd)

      # A missing cd is reported as such when the program is started.
      if File.exists?(path) or not File.dir?(cd) do
        path
      else
        not_found!(
          "program #{inspect(command)}" <>
            if(path != command, do: " (resolved to #{path})", else: "") <> " does not exist"
        )
      end
    else
      {path_env, whose} = path_env(options)
      dirs = for dir <- String.split(path_env, ":"), String.starts_with?(dir, "/"), do: dir
      candidates = Enum.map(dirs, &Path.join(&1, command))

      case Enum.find(candidates, &executable_file?/1) do
        nil ->
          # execvp's EACCES: something by that name, but nothing to run.
          Enum.find(candidates, &File.regular?/1) ||
            not_found!("program #{inspect(command)} not found in #{whose} (#{path_env})")

        path ->
          path
      end
    end
  end

  defp path_env(options) do
    case List.keyfind(Map.get(options, :env, []), ~c"PATH", 0) do
      {_, false} -> {"", "an empty PATH (:env unsets PATH)"}
      {_, path} -> {List.to_string(path), "the PATH given in :env"}
      nil -> {System.get_env("PATH", ""), "PATH"}
    end
  end

  defp executable_file?(path) do
    case File.stat(path) do
      {:ok, %{type: :regular, mode: mode}} -> (mode &&& 0o111) != 0
      _ -> false
    end
  end

  @doc """
  Raises `ErlangError` with `original: :enoent` and `message` as its words.
  """
  @spec not_found!(binary()) :: no_return()
  def not_found!(message) do
    raise ErlangError, original: :enoent, reason: ": " <> message
  end

  @doc """
  Adds what is known here to ps_port's message for a program that could not
  be started from local file `path`: a directory, the permission bits, a
  `#!` interpreter that is missing or not executable, a file the kernel
  cannot run. Other errors are returned as they are.
  """
  @spec explain(spawn_error(), binary(), [binary()]) :: spawn_error()
  def explain({:spawn_error, reason, message} = error, path, _args)
      when reason in [:eacces, :enoent, :enoexec] do
    case why(reason, path) do
      nil -> error
      why -> {:spawn_error, reason, message <> " (" <> why <> ")"}
    end
  end

  def explain({:spawn_error, :e2big, message} = error, _path, args) do
    if message =~ "bytes" do
      error
    else
      bytes = Enum.reduce(args, 0, &(&2 + byte_size(&1) + 1))

      {:spawn_error, :e2big,
       message <>
         " (#{length(args)} arguments of #{bytes} bytes with their NULs, plus the environment, " <>
         "exceed the #{arg_max()} bytes the kernel takes for one exec (ARG_MAX); pass the data " <>
         "on stdin or in a file instead)"}
    end
  end

  def explain(error, _path, _args), do: error

  @doc """
  `explain/3` for the result of a local transport's `open` (the shared or an
  isolated ps_port, where the program's file is this host's): an
  `{:error, spawn_error}` is explained, anything else passes through.
  """
  @spec explain_open(result, ProtonStream.Options.t()) :: result when result: term()
  def explain_open({:error, {:spawn_error, _, _} = error}, options),
    do: {:error, explain(error, options.command, options.args)}

  def explain_open(result, _options), do: result

  @doc """
  `explain/3` for a program a ps_port node could not start: the file is
  looked at only when the node runs on this host (where it is the same
  file); the argument sizes are added in any case.
  """
  @spec explain_remote(spawn_error(), node(), binary(), [binary()]) :: spawn_error()
  def explain_remote(error, node, path, args) do
    host = node |> Atom.to_string() |> String.split("@") |> List.last()
    my_host = node() |> Atom.to_string() |> String.split("@") |> List.last()
    {:ok, hostname} = :inet.gethostname()

    if host in ["127.0.0.1", "localhost", "::1", List.to_string(hostname), my_host] and
         String.starts_with?(path, "/") do
      explain(error, path, args)
    else
      explain(error, "", args)
    end
  end

  defp why(reason, path) do
    case File.stat(path) do
      {:ok, %{type: :directory}} ->
        "#{path} is a directory"

      {:ok, %{type: :regular, mode: mode}} when (mode &&& 0o111) == 0 ->
        "#{path} is not executable: its mode is #{mode_text(mode)}; chmod +x it"

      {:ok, %{type: :regular}} ->
        interpreter_why(reason, path)

      _ ->
        nil
    end
  end

  defp interpreter_why(reason, path) do
    case interpreter(path) do
      nil when reason == :enoexec ->
        "#{path} has no #! line and is not a binary this machine runs"

      nil ->
        nil

      interp ->
        cond do
          not File.exists?(interp) ->
            "its #! line names the interpreter #{interp}, which does not exist"

          not executable_file?(interp) ->
            "its #! line names the interpreter #{interp}, which is not an executable file"

          true ->
            nil
        end
    end
  end

  defp interpreter(path) do
    with {:ok, file} <- File.open(path, [:read, :binary]),
         head = IO.binread(file, 256),
         :ok <- File.close(file),
         "#!" <> rest when is_binary(rest) <- head do
      rest
      |> String.split("\n", parts: 2)
      |> hd()
      |> String.trim()
      |> String.split()
      |> List.first()
    else
      _ -> nil
    end
  end

  defp mode_text(mode), do: "0" <> Integer.to_string(mode &&& 0o7777, 8)

  @doc """
  Checks that `argv` (ps_port's command line, which carries the program's
  arguments and `:env`) and this VM's environment fit in what the kernel
  takes for one `execve(2)` (`getconf ARG_MAX`). Returns `:ok` or a spawn
  error (`:e2big`) with the sizes, `options` being the validated options.
  """
  @spec check_size([binary()], map()) :: :ok | {:error, spawn_error()}
  def check_size(argv, options) do
    env = System.get_env()
    # Each string with its NUL, plus one pointer per string.
    arg_bytes = Enum.reduce(argv, 0, &(&2 + byte_size(&1) + 1 + 8))

    env_bytes =
      Enum.reduce(env, 0, fn {k, v}, acc -> acc + byte_size(k) + byte_size(v) + 2 + 8 end)

    limit = arg_max()

    if arg_bytes + env_bytes > limit do
      args = options.args
      program_env = Map.get(options, :env, [])
      args_bytes = Enum.reduce(args, 0, &(&2 + byte_size(&1)))

      env_option_bytes =
        Enum.reduce(program_env, 0, fn {k, v}, acc ->
          acc + length(k) + 1 + if(v, do: length(v), else: 0)
        end)

      {:error,
       {:spawn_error, :e2big,
        "argument list too long: #{length(args)} arguments of #{args_bytes} bytes and " <>
          "#{length(program_env)} :env variables of #{env_option_bytes} bytes, on ps_port's " <>
          "command line (#{arg_bytes} bytes with its flags, NULs and pointers), and this VM's " <>
          "environment of #{env_bytes} bytes exceed the #{limit} bytes the kernel takes for " <>
          "one exec (ARG_MAX); pass the data on stdin or in a file instead"}}
    else
      :ok
    end
  end

  defp arg_max do
    case :persistent_term.get({__MODULE__, :arg_max}, nil) do
      nil ->
        limit =
          with getconf when is_binary(getconf) <- System.find_executable("getconf"),
               {out, 0} <- ProtonStream.Run.os_cmd(getconf, ["ARG_MAX"]),
               {n, _} <- Integer.parse(out) do
            n
          else
            _ -> 2 * 1024 * 1024
          end

        :persistent_term.put({__MODULE__, :arg_max}, limit)
        limit

      limit ->
        limit
    end
  end
end
