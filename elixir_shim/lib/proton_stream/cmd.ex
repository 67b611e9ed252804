defmodule ProtonStream.Cmd do
  @moduledoc """
  `ProtonStream.cmd/3`: run a program to completion and collect its output,
  a drop-in for `System.cmd/3` and `MuonTrap.cmd/3` with containment.

  The program runs under a ProtonStream process (any `ProtonStream` option
  works: cgroups, `:uid`/`:gid`, `:delay_to_sigkill`, `node:` ...); when the
  caller dies, or `:timeout` expires, the program and its whole process tree
  are killed. The caller's mailbox is left as it was: no `{:EXIT, ...}`, no
  `:DOWN`, no late output.
  """

  alias ProtonStream.Run

  @doc "Runs `command`. See `ProtonStream.cmd/3`."
  @spec cmd(binary(), [binary()], keyword()) ::
          {Collectable.t(), non_neg_integer() | :timeout}
  def cmd(command, args \\ [], opts \\ []) do
    {input, stderr, opts} = Run.split_opts(opts, :console)
    {into, opts} = Keyword.pop(opts, :into, "")
    {timeout, opts} = Keyword.pop(opts, :timeout, :infinity)

    if not (timeout == :infinity or (is_integer(timeout) and timeout >= 0)) do
      raise ArgumentError,
            "invalid option :timeout with value #{inspect(timeout)}: expected milliseconds (a non-negative integer) or :infinity"
    end

    run = Run.start!(command, args, opts, input, stderr)
    deadline = if timeout == :infinity, do: :infinity, else: now() + timeout
    {acc, collector} = Collectable.into(into)

    result =
      try do
        collect(run, deadline, acc, collector)
      catch
        # The collectable raised: stop the program, then re-raise.
        kind, reason ->
          collector.(acc, :halt)
          Run.halt(run)
          :erlang.raise(kind, reason, __STACKTRACE__)
      end

    case result do
      {:done, acc, status} ->
        {collector.(acc, :done), status}

      {:raise, acc, reason, message} ->
        collector.(acc, :halt)
        raise ProtonStream.ExitError, command: command, reason: reason, message: message
    end
  end

  defp collect(run, deadline, acc, collector) do
    case Run.next(run, remaining(deadline)) do
      {:data, data} ->
        acc = collector.(acc, {:cont, data})
        Run.more(run)
        collect(run, deadline, acc, collector)

      {:exit, {:ps_port_exited, _} = reason} ->
        {:raise, acc, reason, nil}

      {:exit, reason} ->
        {:done, acc, Run.exit_status(reason)}

      {:failed, message} ->
        {:raise, acc, :failed, message}

      :timeout ->
        Run.halt(run)
        {:done, acc, :timeout}
    end
  end

  defp now, do: System.monotonic_time(:millisecond)

  defp remaining(:infinity), do: :infinity
  defp remaining(deadline), do: max(deadline - now(), 0)
end
