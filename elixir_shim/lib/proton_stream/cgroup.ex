defmodule ProtonStream.Cgroup do
  @moduledoc """
  cgroup limits as one map, and cgroup statistics, keyed by cgroup v2 names
  on every host (v2, hybrid and v1).

  The `:cgroup` option (of `ProtonStream.open/3`, `start_link/5`, `cmd/3`,
  `stream!/3` and `ProtonStream.Daemon`) takes a map such as

      %{memory_max: 256 * 1024 * 1024, cpu_max: {50_000, 100_000}, pids_max: 100}

  and puts the program in a fresh cgroup with those limits. The keys are
  cgroup v2's file names with `_` for `.`; on a host whose controllers are
  cgroup v1 (legacy or hybrid, like Debian 12 with systemd's hybrid mode)
  they are written to the v1 files that do the same:

  | key | v2 file | v1 file |
  |---|---|---|
  | `memory_max` | `memory.max` | `memory.limit_in_bytes` |
  | `memory_high` | `memory.high` | `memory.soft_limit_in_bytes` (a soft limit: reclaimed first, never throttled) |
  | `memory_swap_max` | `memory.swap.max` | `memory.memsw.limit_in_bytes` = `memory_max` + swap (needs `memory_max`) |
  | `cpu_max: {quota_us, period_us}` | `cpu.max` | `cpu.cfs_quota_us`, `cpu.cfs_period_us` |
  | `cpu_weight` (1..10000) | `cpu.weight` | `cpu.shares` = weight × 1024 / 100 |
  | `pids_max` | `pids.max` | `pids.max` |
  | `cpuset_cpus`, `cpuset_mems` | `cpuset.cpus`, `cpuset.mems` | same (v1 needs both: `cpuset_mems` defaults to the root's) |

  Values are integers (bytes, microseconds, counts), `:max` for no limit,
  or binaries as the kernel takes them (`cpuset_cpus: "0-1"`). Without
  `:cgroup_path`/`:cgroup_base` the group is made at `proton_stream/<random>`
  (in node mode: under the node's `--cgroup-base`), and removed when the
  program is gone. It can be combined with `:cgroup_controllers` and
  `:cgroup_sets`, which keep working as before.

  `statistics/1` and `config/1` read a group back, keyed by v2 names.
  """

  @cgroup_fs "/sys/fs/cgroup"
  # v1 reports "no limit" as the largest page-aligned 64-bit value.
  @v1_unlimited 9_223_372_036_854_771_712

  @keys [
    :memory_max,
    :memory_high,
    :memory_swap_max,
    :cpu_max,
    :cpu_weight,
    :pids_max,
    :cpuset_cpus,
    :cpuset_mems
  ]

  @typedoc "The `:cgroup` option: limits keyed by v2 names."
  @type config :: %{
          optional(:memory_max) => non_neg_integer() | :max,
          optional(:memory_high) => non_neg_integer() | :max,
          optional(:memory_swap_max) => non_neg_integer() | :max,
          optional(:cpu_max) => {pos_integer() | :max, pos_integer()},
          optional(:cpu_weight) => 1..10_000,
          optional(:pids_max) => pos_integer() | :max,
          optional(:cpuset_cpus) => binary(),
          optional(:cpuset_mems) => binary()
        }

  @doc """
  True when this host's controllers are cgroup v2 (one unified tree);
  false on v1 and hybrid hosts.
  """
  @spec unified?() :: boolean()
  def unified?, do: File.regular?(Path.join(@cgroup_fs, "cgroup.controllers"))

  @doc """
  Turns a `:cgroup` map into `{controllers, sets}` for `:cgroup_controllers`
  and `:cgroup_sets`, for this host's cgroup version. Raises `ArgumentError`
  naming an unknown key or a bad value.
  """
  @spec to_options(config()) :: {[binary()], [{binary(), binary(), binary()}]}
  def to_options(config) when is_map(config) do
    Enum.each(config, &check!/1)
    unified = unified?()
    sets = Enum.flat_map(Enum.sort(config), &sets(&1, config, unified))
    # Statistics need these groups too: usage (cpuacct on v1), pids.current.
    wanted = ["memory", "cpu"] ++ if(unified, do: [], else: ["cpuacct"]) ++ ["pids"]
    controllers = Enum.uniq(Enum.filter(wanted, &available?/1) ++ Enum.map(sets, &elem(&1, 0)))
    {controllers, sets}
  end

  def to_options(other) do
    raise ArgumentError,
          "invalid option :cgroup with value #{inspect(other)}: expected a map such as " <>
            "%{memory_max: 268435456, cpu_max: {50000, 100000}}"
  end

  defp check!({key, value} = pair) do
    valid =
      case key do
        k when k in [:memory_max, :memory_high, :memory_swap_max] ->
          limit?(value)

        :pids_max ->
          limit?(value) and value != 0

        :cpu_weight ->
          is_integer(value) and value in 1..10_000

        :cpu_max ->
          match?({q, p} when (q == :max or is_integer(q)) and is_integer(p), value)

        k when k in [:cpuset_cpus, :cpuset_mems] ->
          is_binary(value) and value =~ ~r/\A[0-9,\-]+\z/

        _ ->
          :unknown
      end

    case valid do
      true ->
        :ok

      :unknown ->
        raise ArgumentError,
              "invalid option :cgroup: unknown key #{inspect(key)}; known keys: " <>
                Enum.map_join(@keys, ", ", &inspect/1)

      false ->
        raise ArgumentError, "invalid option :cgroup: bad value in #{inspect(pair)}"
    end
  end

  defp limit?(value), do: value == :max or (is_integer(value) and value >= 0)

  defp sets({:memory_max, v}, _config, true), do: [{"memory", "memory.max", max(v)}]
  defp sets({:memory_max, v}, _config, false), do: [{"memory", "memory.limit_in_bytes", v1(v)}]
  defp sets({:memory_high, v}, _config, true), do: [{"memory", "memory.high", max(v)}]

  defp sets({:memory_high, v}, _config, false),
    do: [{"memory", "memory.soft_limit_in_bytes", v1(v)}]

  defp sets({:memory_swap_max, v}, _config, true), do: [{"memory", "memory.swap.max", max(v)}]

  defp sets({:memory_swap_max, v}, config, false) do
    total =
      case {Map.get(config, :memory_max), v} do
        {mem, swap} when is_integer(mem) and is_integer(swap) -> mem + swap
        {mem, _} when mem in [nil, :max] -> raise_swap()
        _ -> :max
      end

    [{"memory", "memory.memsw.limit_in_bytes", v1(total)}]
  end

  defp sets({:cpu_max, {quota, period}}, _config, true),
    do: [{"cpu", "cpu.max", "#{max(quota)} #{period}"}]

  defp sets({:cpu_max, {quota, period}}, _config, false) do
    quota = if quota == :max, do: "-1", else: Integer.to_string(quota)
    [{"cpu", "cpu.cfs_period_us", Integer.to_string(period)}, {"cpu", "cpu.cfs_quota_us", quota}]
  end

  defp sets({:cpu_weight, w}, _config, true), do: [{"cpu", "cpu.weight", Integer.to_string(w)}]

  defp sets({:cpu_weight, w}, _config, false),
    do: [{"cpu", "cpu.shares", Integer.to_string(max(div(w * 1024, 100), 2))}]

  defp sets({:pids_max, v}, _config, _unified), do: [{"pids", "pids.max", max(v)}]

  defp sets({:cpuset_cpus, cpus}, config, unified) do
    mems =
      if unified or Map.has_key?(config, :cpuset_mems),
        do: [],
        else: [{"cpuset", "cpuset.mems", root_value("cpuset", "cpuset.mems") || "0"}]

    mems ++ [{"cpuset", "cpuset.cpus", cpus}]
  end

  defp sets({:cpuset_mems, mems}, _config, _unified), do: [{"cpuset", "cpuset.mems", mems}]

  defp raise_swap do
    raise ArgumentError,
          "invalid option :cgroup: memory_swap_max needs memory_max on a cgroup v1 host " <>
            "(v1 limits memory and swap together: memory.memsw.limit_in_bytes)"
  end

  defp max(:max), do: "max"
  defp max(n), do: Integer.to_string(n)
  defp v1(:max), do: "-1"
  defp v1(n), do: Integer.to_string(n)

  defp available?(controller) do
    case ProtonStream.Cgroups.get_controllers() do
      {:ok, controllers} -> controller in controllers
      _ -> false
    end
  end

  defp root_value(controller, file) do
    case File.read(Path.join([@cgroup_fs, controller, file])) do
      {:ok, value} -> String.trim(value)
      _ -> nil
    end
  end

  ## Reading a group back

  @doc """
  The statistics of cgroup `path` (relative to the controllers' roots),
  keyed by v2 file names on every host: `"memory.current"`,
  `"memory.peak"`, `"cpu.stat"` (a map with `"usage_usec"`, ...),
  `"pids.current"`, `"memory.events"` (a map with `"oom_kill"`, ...). Keys
  whose controller the group does not have are left out.
  """
  @spec statistics(binary()) :: %{optional(binary()) => integer() | map()}
  def statistics(path) do
    if unified?(), do: v2_statistics(path), else: v1_statistics(path)
  end

  defp v2_statistics(path) do
    dir = Path.join(@cgroup_fs, path)

    %{
      "memory.current" => int(dir, "memory.current"),
      "memory.peak" => int(dir, "memory.peak"),
      "pids.current" => int(dir, "pids.current"),
      "cpu.stat" => keyed(dir, "cpu.stat"),
      "memory.events" => keyed(dir, "memory.events")
    }
    |> compact()
  end

  defp v1_statistics(path) do
    memory = Path.join([@cgroup_fs, "memory", path])
    cpu = Path.join([@cgroup_fs, "cpu", path])
    cpuacct = Path.join([@cgroup_fs, "cpuacct", path])
    pids = Path.join([@cgroup_fs, "pids", path])

    cpu_stat =
      %{
        "usage_usec" => usec(cpuacct, "cpuacct.usage") || usec(cpu, "cpuacct.usage"),
        "user_usec" => usec(cpuacct, "cpuacct.usage_user") || usec(cpu, "cpuacct.usage_user"),
        "system_usec" => usec(cpuacct, "cpuacct.usage_sys") || usec(cpu, "cpuacct.usage_sys")
      }
      |> Map.merge(v1_throttling(keyed(cpu, "cpu.stat")))
      |> compact()

    memory_events =
      case keyed(memory, "memory.oom_control") do
        nil -> nil
        oom -> compact(%{"oom_kill" => oom["oom_kill"], "max" => int(memory, "memory.failcnt")})
      end

    %{
      "memory.current" => int(memory, "memory.usage_in_bytes"),
      "memory.peak" => int(memory, "memory.max_usage_in_bytes"),
      "pids.current" => int(pids, "pids.current"),
      "cpu.stat" => if(cpu_stat == %{}, do: nil, else: cpu_stat),
      "memory.events" => memory_events
    }
    |> compact()
  end

  defp v1_throttling(nil), do: %{}

  defp v1_throttling(stat) do
    %{
      "nr_periods" => stat["nr_periods"],
      "nr_throttled" => stat["nr_throttled"],
      "throttled_usec" => stat["throttled_time"] && div(stat["throttled_time"], 1000)
    }
  end

  @doc """
  The limits of cgroup `path` as a `:cgroup` map (see `to_options/1`), read
  from its files: reusable as the `:cgroup` option of another program.
  Limits that are not set (no limit) are left out.
  """
  @spec config(binary()) :: config()
  def config(path) do
    if unified?(), do: v2_config(path), else: v1_config(path)
  end

  defp v2_config(path) do
    dir = Path.join(@cgroup_fs, path)

    cpu_max =
      case read(dir, "cpu.max") do
        "max " <> _ -> nil
        nil -> nil
        text -> text |> String.split() |> Enum.map(&String.to_integer/1) |> List.to_tuple()
      end

    %{
      memory_max: limit(read(dir, "memory.max")),
      memory_high: limit(read(dir, "memory.high")),
      memory_swap_max: limit(read(dir, "memory.swap.max")),
      pids_max: limit(read(dir, "pids.max")),
      cpu_max: cpu_max,
      cpu_weight: if(w = int(dir, "cpu.weight"), do: if(w != 100, do: w)),
      cpuset_cpus: nonempty(read(dir, "cpuset.cpus")),
      cpuset_mems: nonempty(read(dir, "cpuset.mems"))
    }
    |> compact()
  end

  defp v1_config(path) do
    memory = Path.join([@cgroup_fs, "memory", path])
    cpu = Path.join([@cgroup_fs, "cpu", path])
    memory_max = v1_limit(int(memory, "memory.limit_in_bytes"))
    memsw = v1_limit(int(memory, "memory.memsw.limit_in_bytes"))

    cpu_max =
      case {int(cpu, "cpu.cfs_quota_us"), int(cpu, "cpu.cfs_period_us")} do
        {quota, period} when is_integer(quota) and quota > 0 -> {quota, period}
        _ -> nil
      end

    shares = int(cpu, "cpu.shares")

    %{
      memory_max: memory_max,
      memory_high: v1_limit(int(memory, "memory.soft_limit_in_bytes")),
      memory_swap_max: if(memory_max && memsw, do: memsw - memory_max),
      pids_max: limit(read(Path.join([@cgroup_fs, "pids", path]), "pids.max")),
      cpu_max: cpu_max,
      cpu_weight: if(shares && shares != 1024, do: max(div(shares * 100, 1024), 1)),
      cpuset_cpus: nonempty(read(Path.join([@cgroup_fs, "cpuset", path]), "cpuset.cpus"))
    }
    |> compact()
  end

  defp v1_limit(n) when is_integer(n) and n < @v1_unlimited, do: n
  defp v1_limit(_), do: nil

  defp limit(nil), do: nil
  defp limit("max"), do: nil
  defp limit(text), do: String.to_integer(text)

  defp nonempty(""), do: nil
  defp nonempty(text), do: text

  @doc """
  Reads `file` of cgroup `path`, a v2 name translated on a v1 host
  (`"memory.max"` reads `memory.limit_in_bytes` there); other names are
  read as they are, from their controller's tree. Returns the trimmed text.
  """
  @spec get(binary(), binary()) :: {:ok, binary()} | {:error, File.posix()}
  def get(path, file) do
    case File.read(file_path(path, file)) do
      {:ok, text} -> {:ok, String.trim(text)}
      error -> error
    end
  end

  @doc """
  Writes `value` to `file` of cgroup `path` (names as in `get/2`).
  """
  @spec set(binary(), binary(), binary() | integer()) :: :ok | {:error, File.posix()}
  def set(path, file, value), do: File.write(file_path(path, file), to_string(value))

  @v1_names %{
    "memory.max" => "memory.limit_in_bytes",
    "memory.high" => "memory.soft_limit_in_bytes",
    "memory.current" => "memory.usage_in_bytes",
    "memory.peak" => "memory.max_usage_in_bytes",
    "cpu.weight" => "cpu.shares"
  }

  defp file_path(path, file) do
    if unified?() do
      Path.join([@cgroup_fs, path, file])
    else
      file = Map.get(@v1_names, file, file)
      [controller | _] = String.split(file, ".")
      Path.join([@cgroup_fs, controller, path, file])
    end
  end

  @doc """
  The cgroup path of OS process `os_pid` for `controller` (v1) or in the
  unified tree (v2), from `/proc/PID/cgroup`, without the leading `/`; nil
  when the process is gone.
  """
  @spec of_os_pid(pos_integer(), binary()) :: binary() | nil
  def of_os_pid(os_pid, controller \\ "memory") do
    with {:ok, text} <- File.read("/proc/#{os_pid}/cgroup") do
      lines =
        for line <- String.split(text, "\n", trim: true), do: String.split(line, ":", parts: 3)

      unified = unified?()

      Enum.find_value(lines, fn
        ["0", "", "/" <> path] when unified -> path
        [_, controllers, "/" <> path] -> if controller in String.split(controllers, ","), do: path
        _ -> nil
      end)
    else
      _ -> nil
    end
  end

  @doc """
  The processes the kernel's OOM killer chose in cgroup `path` (the group
  with the limit, or one inside it), newest last, as `{os_pid, name}`: read
  from the kernel log's `oom-kill:` lines (`dmesg`), which name the memcg
  and the victim. Empty when the log cannot be read (no `dmesg`, or not
  allowed).
  """
  @spec oom_victims(binary()) :: [{pos_integer(), binary()}]
  def oom_victims(path) do
    path = "/" <> String.trim_leading(path, "/")

    with dmesg when is_binary(dmesg) <- System.find_executable("dmesg"),
         {log, 0} <- ProtonStream.Run.os_cmd(dmesg, [], stderr_to_stdout: true) do
      for line <- String.split(log, "\n"),
          [_, memcg, task, pid] <-
            [Regex.run(~r/oom-kill:.*oom_memcg=([^,]*),.*task=(.*),pid=(\d+),/, line)],
          memcg == path or String.ends_with?(memcg, path),
          do: {String.to_integer(pid), task}
    else
      _ -> []
    end
  end

  defp read(dir, file) do
    case File.read(Path.join(dir, file)) do
      {:ok, text} -> String.trim(text)
      {:error, _} -> nil
    end
  end

  defp int(dir, file) do
    case read(dir, file) do
      nil ->
        nil

      text ->
        case Integer.parse(text) do
          {n, ""} -> n
          _ -> nil
        end
    end
  end

  defp usec(dir, file), do: if(ns = int(dir, file), do: div(ns, 1000))

  # "key value" lines as a map of integers.
  defp keyed(dir, file) do
    case read(dir, file) do
      nil ->
        nil

      text ->
        for line <- String.split(text, "\n", trim: true),
            [key, value] <- [String.split(line)],
            {n, ""} <- [Integer.parse(value)],
            into: %{},
            do: {key, n}
    end
  end

  defp compact(map), do: for({k, v} <- map, v != nil, into: %{}, do: {k, v})
end
