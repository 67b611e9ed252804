defmodule ProtonStream.Cgroups do
  @moduledoc """
  Small helpers to inspect and tune cgroups, like the `cgget`/`cgset` tools.

  They read and write the cgroup filesystem directly (no `cgroup-tools`
  needed at run time). Paths are relative to a controller's root:

    * cgroup v1 and hybrid hosts: `/sys/fs/cgroup/<controller>/<path>/<key>`
    * cgroup v2 (unified) hosts: `/sys/fs/cgroup/<path>/<key>` (there is one
      tree; the controller is only the key's prefix)

  Values are returned exactly as the kernel prints them, trailing newline
  included (as proton_stream does); use `String.trim/1` before comparing.
  """

  @cgroup_fs "/sys/fs/cgroup"

  @doc """
  Returns true when at least one cgroup controller is usable on this host.
  """
  @spec cgroups_enabled?() :: boolean()
  def cgroups_enabled? do
    match?({:ok, [_ | _]}, get_controllers())
  end

  @doc """
  Returns the cgroup controllers that are usable on this host: on cgroup v1
  (and hybrid) the mounted, enabled hierarchies listed in `/proc/cgroups`, on
  cgroup v2 the ones in the root's `cgroup.controllers`. Sorted, no duplicates.
  """
  @spec get_controllers() :: {:ok, [String.t()]} | {:error, File.posix()}
  def get_controllers do
    with {:ok, v1} <- v1_controllers() do
      case Enum.sort(Enum.uniq(v1 ++ v2_controllers())) do
        [] -> if File.dir?(@cgroup_fs), do: {:ok, []}, else: {:error, :enoent}
        controllers -> {:ok, controllers}
      end
    end
  end

  @doc """
  Reads cgroup variable `variable_name` of `cgroup_path` under `controller`
  (like `cgget -n -v -r variable_name cgroup_path`).
  """
  @spec cgget(String.t(), String.t(), String.t()) :: {:ok, String.t()} | {:error, File.posix()}
  def cgget(controller, cgroup_path, variable_name) do
    File.read(variable_path(controller, cgroup_path, variable_name))
  end

  @doc """
  Writes `value` to cgroup variable `variable_name` of `cgroup_path` under
  `controller` (like `cgset -r variable_name=value cgroup_path`).
  """
  @spec cgset(String.t(), String.t(), String.t(), String.t()) :: :ok | {:error, File.posix()}
  def cgset(controller, cgroup_path, variable_name, value) do
    File.write(variable_path(controller, cgroup_path, variable_name), value)
  end

  defp variable_path(controller, cgroup_path, variable_name) do
    if unified?() do
      Path.join([@cgroup_fs, cgroup_path, variable_name])
    else
      Path.join([@cgroup_fs, controller, cgroup_path, variable_name])
    end
  end

  defp unified?, do: File.regular?(Path.join(@cgroup_fs, "cgroup.controllers"))

  # /proc/cgroups: "#subsys_name hierarchy num_cgroups enabled"; hierarchy 0
  # means the controller is not mounted as v1.
  defp v1_controllers do
    case File.read("/proc/cgroups") do
      {:ok, text} ->
        controllers =
          for line <- String.split(text, "\n", trim: true),
              not String.starts_with?(line, "#"),
              [name, hierarchy, _count, "1"] <- [String.split(line)],
              hierarchy != "0",
              do: name

        {:ok, controllers}

      {:error, :enoent} ->
        {:ok, []}

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp v2_controllers do
    ["cgroup.controllers", "unified/cgroup.controllers"]
    |> Enum.flat_map(fn file ->
      case File.read(Path.join(@cgroup_fs, file)) do
        {:ok, text} -> String.split(text)
        {:error, _} -> []
      end
    end)
  end
end
