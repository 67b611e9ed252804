defmodule ProtonStream.Limits do
  @moduledoc """
  The limits the shim shares with ps_port, read when the shim is compiled
  from the one table both sides read: `internal/limits/limits.txt` in the
  Go sources `:ps_port` builds (`$PS_PORT_SRC` when set), which ps_port
  embeds. Changing a value there changes both on their next build.

  The names are the table's: `:stdin_limit_default`, `:stdin_limit_max`,
  `:stdio_window_default`, `:stdio_window_max`, `:delay_to_sigkill_max_ms`, `:max_frame`,
  `:max_request_default`, `:max_request_min`, `:max_request_max`.
  """

  @table Path.join(
           System.get_env("PS_PORT_SRC") || Path.expand("../../..", __DIR__),
           "internal/limits/limits.txt"
         )
  @external_resource @table

  @text (case File.read(@table) do
           {:ok, text} ->
             text

           {:error, reason} ->
             raise CompileError,
               description:
                 "cannot read ps_port's limits table #{@table} (#{:file.format_error(reason)}): " <>
                   "it is part of the Go sources; set PS_PORT_SRC to the directory that holds " <>
                   "ps_port's go.mod"
         end)

  # "name value" lines and # comments; like ps_port's reader
  # (internal/limits), this one refuses a line of another shape and a name
  # given twice.
  @entries (for {line, number} <- Enum.with_index(String.split(@text, "\n"), 1),
                line = String.trim(line),
                line != "" and not String.starts_with?(line, "#") do
              case Regex.run(~r/\A([a-z0-9_]+)\s+([1-9][0-9]*)\z/, line) do
                [_, name, value] ->
                  {String.to_atom(name), String.to_integer(value)}

                nil ->
                  raise CompileError,
                    file: @table,
                    line: number,
                    description: "want \"name value\" (a positive decimal integer), got: #{line}"
              end
            end)

  @limits Map.new(@entries)

  if map_size(@limits) != length(@entries) do
    raise CompileError, file: @table, description: "a name is given twice"
  end

  @typedoc "A name of the table."
  @type name ::
          :stdin_limit_default
          | :stdin_limit_max
          | :stdio_window_default
          | :stdio_window_max
          | :delay_to_sigkill_max_ms
          | :max_frame
          | :max_request_default
          | :max_request_min
          | :max_request_max

  @doc """
  The value of `name` in the table. Raises `KeyError` for a name the table
  does not have.
  """
  @spec fetch!(name()) :: pos_integer()
  def fetch!(name), do: Map.fetch!(@limits, name)

  @doc "The whole table, as a map from name to value."
  @spec all() :: %{name() => pos_integer()}
  def all, do: @limits
end
