defmodule ProtonStream.Pty do
  @moduledoc """
  `pty: true`: the program runs on a pseudo-terminal, for programs that
  behave differently, or refuse to run, without one.

  The program's stdin, stdout and stderr are the terminal: what you send
  with `{:command, data}` is typed into it (without echo), and everything
  it writes, stderr included, arrives as `{ps, {:data, data}}` with the
  terminal's line endings (`"\\r\\n"`). `:pty_size` (`{rows, columns}`,
  default `{24, 80}`) sets the window size before the program starts;
  `ProtonStream.pty_resize/2` changes it later (the program gets
  `SIGWINCH`).

  The terminal comes from util-linux's `script` (Debian's `bsdutils`,
  installed on Debian and most Linux systems), which ps_port runs in
  place of the program: `script` opens the pseudo-terminal, starts the
  program on it with `/bin/sh`, relays the bytes, and exits with the
  program's status. Containment is unchanged: `script` and the program are
  one process tree, in the same cgroup, killed together. In node mode
  `script` must be on the node's `PATH` and match its `--allow` patterns,
  and the program is looked up on the node's `PATH`. `script` runs the
  command with `SHELL=/bin/sh`; the program gets this VM's `SHELL` back in
  port mode, and `:env`'s when it sets one (in node mode without it the
  program sees `SHELL=/bin/sh`).

  Not available with `pty: true`: `:arg0` (the shell's `exec` cannot set
  it), and `:capture_stderr_only` / `:stderr_to_stdout`, which have no
  meaning on a terminal (stderr is the terminal).
  """

  @default_size {24, 80}

  @doc """
  Rewrites validated options with `pty: true` so that ps_port runs the
  program on a pseudo-terminal through `script`. Other options are returned
  unchanged. Raises `ArgumentError` for options that cannot go with a
  terminal, or when `script` is not installed.
  """
  @spec wrap(map()) :: map()
  def wrap(%{pty: true} = options) do
    for key <- [:arg0, :capture_stderr_only, :stderr_to_stdout],
        Map.get(options, key) not in [nil, false] do
      raise ArgumentError,
            "invalid option #{inspect(key)} with pty: true: on a terminal stderr is the terminal " <>
              "and argv[0] cannot be set; leave #{inspect(key)} out"
    end

    {rows, cols} = Map.get(options, :pty_size, @default_size)
    remote = Map.has_key?(options, :node)
    env = Map.get(options, :env, [])
    shell = List.keyfind(env, ~c"SHELL", 0)

    # script runs the command with $SHELL: /bin/sh, whose quoting we know;
    # the program gets the SHELL it would have had back.
    restore =
      case shell do
        {_, false} ->
          "unset SHELL; "

        {_, value} ->
          "SHELL=#{sh_quote(List.to_string(value))}; export SHELL; "

        nil when remote ->
          ""

        nil ->
          if s = System.get_env("SHELL"),
            do: "SHELL=#{sh_quote(s)}; export SHELL; ",
            else: "unset SHELL; "
      end

    inner =
      "stty rows #{rows} cols #{cols} 2>/dev/null; " <>
        restore <> "exec " <> Enum.map_join([options.command | options.args], " ", &sh_quote/1)

    %{
      options
      | command: script(remote),
        args: ["-q", "-E", "never", "-e", "-c", inner, "/dev/null"]
    }
    |> Map.put(:env, List.keystore(env, ~c"SHELL", 0, {~c"SHELL", ~c"/bin/sh"}))
  end

  def wrap(%{pty_size: _}) do
    raise ArgumentError, "invalid option :pty_size: it needs pty: true"
  end

  def wrap(options), do: options

  defp script(true), do: "script"

  defp script(false) do
    System.find_executable("script") ||
      raise ArgumentError,
            "pty: true needs util-linux's script program, which is not on PATH " <>
              "(Debian: apt-get install bsdutils)"
  end

  # One POSIX shell word.
  defp sh_quote(word), do: "'" <> String.replace(word, "'", "'\\''") <> "'"

  @doc """
  Sets the window size of the program's terminal to `rows` × `cols`; the
  kernel sends the program `SIGWINCH`. Needs a program started with
  `pty: true` running on this host (port mode, or a node on this host).
  """
  @spec resize(pos_integer(), pos_integer(), pos_integer()) :: :ok | {:error, binary()}
  def resize(os_pid, rows, cols) do
    with {:ok, tty} <- terminal_of(os_pid),
         {_, 0} <-
           ProtonStream.Run.os_cmd("stty", ["-F", tty, "rows", "#{rows}", "cols", "#{cols}"],
             stderr_to_stdout: true
           ) do
      :ok
    else
      {:error, _} = error -> error
      {out, status} -> {:error, "stty exited with status #{status}: #{String.trim(out)}"}
    end
  end

  # script's child (the program, exec'd by sh) has the terminal as stdin.
  defp terminal_of(os_pid) do
    children =
      case File.read("/proc/#{os_pid}/task/#{os_pid}/children") do
        {:ok, text} -> String.split(text)
        {:error, _} -> []
      end

    Enum.find_value(
      children,
      {:error, "no terminal found for os pid #{os_pid} (pty: true on this host?)"},
      fn child ->
        case File.read_link("/proc/#{child}/fd/0") do
          {:ok, "/dev/pts/" <> _ = tty} -> {:ok, tty}
          _ -> nil
        end
      end
    )
  end
end
