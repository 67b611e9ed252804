defmodule ProtonStream.Stream do
  @moduledoc """
  `ProtonStream.stream!/3`: a program's stdout as a lazy, demand-driven
  `Enumerable` of binary chunks.

  Nothing runs until the stream is enumerated. Each enumeration starts the
  program (with every `ProtonStream` option, `node:` included), yields its
  stdout chunk by chunk as the consumer asks for them, and ends when the
  program exits. Memory stays bounded however slowly the consumer reads: the
  program is not given a new window of output (`:stdio_window`, 256 KiB by
  default) until the consumer took the previous chunk, so it blocks in
  `write(2)` instead of filling the VM.

  Halting early (`Enum.take/2`, `Stream.take_while/2`, an exception in the
  consumer) stops the program and its whole process tree, and returns once
  the ProtonStream process is gone. A program that exits with a non-zero
  status raises `ProtonStream.ExitError` after all its output was yielded.
  No message is left in the consumer's mailbox.
  """

  alias ProtonStream.Run

  @doc """
  Returns a stream of `command`'s stdout chunks. See `ProtonStream.stream!/3`.
  """
  @spec stream!(binary(), [binary()], keyword()) :: Enumerable.t()
  def stream!(command, args \\ [], opts \\ []) do
    {input, stderr, ps_opts} = Run.split_opts(opts, :console)
    # Bad options raise here, where the stream is made, not at enumeration.
    ProtonStream.Options.validate(:stream, command, args, ps_opts)

    Stream.resource(
      fn -> {Run.start!(command, args, ps_opts, input, stderr), :running} end,
      &next(&1, command),
      &stop/1
    )
  end

  defp next({run, :running} = acc, command) do
    case Run.next(run, :infinity) do
      {:data, data} ->
        Run.more(run)
        {[data], acc}

      {:exit, :normal} ->
        {:halt, {run, :done}}

      {:exit, reason} ->
        raise ProtonStream.ExitError, command: command, reason: reason

      {:failed, message} ->
        raise ProtonStream.ExitError, command: command, reason: :failed, message: message
    end
  end

  defp next({_run, :done} = acc, _command), do: {:halt, acc}

  defp stop({run, :running}), do: Run.halt(run)
  defp stop({_run, :done}), do: :ok
end

defmodule ProtonStream.ExitError do
  @moduledoc """
  Raised by a `ProtonStream.stream!/3` enumeration when the program exited
  with a non-zero status or was killed by a signal, after all its output was
  yielded; also when the run failed (`reason: :failed`, e.g. `:input` that
  could not be read or was refused).

  Fields: `command`, `reason` (`{:exit_status, n}`, `{:signal, n}`,
  `{:ps_port_exited, _}` or `:failed`), `exit_status` (the number
  `System.cmd/3` would return: `n`, or `128 + signal`; `nil` when the run
  failed) and `message`.
  """

  defexception [:command, :reason, :exit_status, :message]

  @impl Exception
  def exception(opts) do
    command = Keyword.fetch!(opts, :command)
    reason = Keyword.fetch!(opts, :reason)

    status =
      case reason do
        {:exit_status, n} -> n
        {:signal, n} -> 128 + n
        _ -> nil
      end

    message =
      Keyword.get(opts, :message) ||
        case reason do
          {:exit_status, n} -> "#{command} exited with status #{n}"
          {:signal, n} -> "#{command} was killed by signal #{n}"
          other -> "#{command} ended: #{inspect(other)}"
        end

    %__MODULE__{command: command, reason: reason, exit_status: status, message: message}
  end
end
