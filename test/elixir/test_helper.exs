defmodule ProtonStreamTest.Helpers do
  @moduledoc """
  Helpers shared by the ExUnit suite of the `:proton_stream` shim.

  `setup_bin_dir!/0` (run once below) puts stand-ins for the programs the
  upstream README names (`my_command`, `my_program`, `memory_hog`, `cpu_hog`,
  `spawning_program`, `ping`) in a temporary directory at the front of `PATH`, so the
  README's examples run exactly as written.
  """

  import ExUnit.Assertions

  @programs %{
    "my_command" => """
    #!/bin/sh
    echo "my_command started"
    echo "my_command warning" >&2
    exec cat
    """,
    "my_program" => """
    #!/bin/sh
    echo "to stdout"
    echo "to stderr" >&2
    """,
    # Grows past any sensible memory limit; exec so the hog is the child itself.
    "memory_hog" => """
    #!/bin/sh
    exec perl -e 'my @a; while (1) { push @a, "x" x 1048576 }'
    """,
    "cpu_hog" => """
    #!/bin/sh
    while :; do :; done
    """,
    # The README's background example: a program that ignores stdin (ping is
    # not installed everywhere, so a stand-in with the same trait).
    "ping" => """
    #!/bin/sh
    while :; do
      echo "64 bytes from 127.0.0.1: icmp_seq=0 ttl=64 time=0.032 ms"
      sleep 5
    done
    """,
    "spawning_program" => """
    #!/bin/sh
    sleep 1000 &
    sleep 1000 &
    echo spawned
    wait
    """
  }

  @doc "Writes the stand-in programs and prepends their directory to PATH."
  def setup_bin_dir! do
    dir =
      Path.join(System.tmp_dir!(), "proton_stream_test_bin_#{System.unique_integer([:positive])}")

    File.mkdir_p!(dir)

    for {name, script} <- @programs do
      path = Path.join(dir, name)
      File.write!(path, script)
      File.chmod!(path, 0o755)
    end

    System.put_env("PATH", dir <> ":" <> System.get_env("PATH", "/usr/bin:/bin"))
    dir
  end

  @doc "Random lower-case hex string of `bytes` bytes."
  def rand_hex(bytes \\ 4), do: Base.encode16(:rand.bytes(bytes), case: :lower)

  @doc """
  True while the OS process exists and is not a zombie (a zombie has exited;
  it only waits to be reaped).
  """
  def os_pid_alive?(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, stat} -> proc_state(stat) not in ["Z", "X"]
      {:error, _} -> false
    end
  end

  defp proc_state(stat) do
    [_, rest] = String.split(stat, ") ", parts: 2)
    binary_part(rest, 0, 1)
  end

  @doc "Parent pid of an OS process, or nil when it is gone."
  def os_ppid(pid) do
    with {:ok, stat} <- File.read("/proc/#{pid}/stat"),
         [_, rest] <- String.split(stat, ") ", parts: 2),
         [_state, ppid | _] <- String.split(rest, " ") do
      String.to_integer(ppid)
    else
      _ -> nil
    end
  end

  @doc "Every live descendant of OS process `pid`."
  def os_descendants(pid) do
    table =
      for entry <- File.ls!("/proc"),
          Regex.match?(~r/\A\d+\z/, entry),
          child = String.to_integer(entry),
          ppid = os_ppid(child),
          ppid != nil,
          do: {ppid, child}

    collect_descendants([pid], table, [])
  end

  defp collect_descendants([], _table, acc), do: acc

  defp collect_descendants([pid | rest], table, acc) do
    children = for {^pid, child} <- table, do: child
    collect_descendants(children ++ rest, table, children ++ acc)
  end

  @doc "Polls `fun` every 5 ms until it returns truthy or `timeout` ms passed."
  def wait_until(fun, timeout \\ 5_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_wait_until(fun, deadline)
  end

  defp do_wait_until(fun, deadline) do
    cond do
      fun.() ->
        true

      System.monotonic_time(:millisecond) > deadline ->
        false

      true ->
        Process.sleep(5)
        do_wait_until(fun, deadline)
    end
  end

  @doc """
  Receives everything `ps` sends until its `{:EXIT, ps, reason}` and returns
  `%{stdout: binary, stderr: binary, exit: reason, order: [tag]}`.
  """
  def collect(ps, timeout \\ 10_000) do
    do_collect(ps, timeout, [], [], [])
  end

  defp do_collect(ps, timeout, out, err, order) do
    receive do
      {^ps, {:data, data}} -> do_collect(ps, timeout, [out | data], err, [:data | order])
      {^ps, {:error, data}} -> do_collect(ps, timeout, out, [err | data], [:error | order])
      {:EXIT, ^ps, reason} -> result(out, err, reason, order)
    after
      timeout ->
        flunk(
          "no {:EXIT, ps, _} within #{timeout} ms; got so far: #{inspect(result(out, err, :timeout, order))}"
        )
    end
  end

  defp result(out, err, reason, order) do
    %{
      stdout: IO.iodata_to_binary(out),
      stderr: IO.iodata_to_binary(err),
      exit: reason,
      order: Enum.reverse(order)
    }
  end

  @doc "Runs `command` in message mode and collects everything (see `collect/2`)."
  def run(command, args, opts \\ [], timeout \\ 10_000) do
    {:ok, ps} = ProtonStream.open(command, args, opts)
    collect(ps, timeout)
  end

  @doc "The cgroup of OS process `pid` for `controller` (as in /proc/PID/cgroup)."
  def cgroup_of(pid, controller) do
    "/proc/#{pid}/cgroup"
    |> File.read!()
    |> String.split("\n", trim: true)
    |> Enum.find_value(fn line ->
      [_id, controllers, path] = String.split(line, ":", parts: 3)
      if controller in String.split(controllers, ","), do: path
    end)
  end

  @doc """
  Creates a cgroup `proton_stream_test_<random>` for `controllers` with
  `cgcreate` and removes it (with any group left inside) when the test exits.

  The removal is an rmdir per directory: `cgdelete -g memory,cpu:NAME` leaves
  the cpu group behind on this kind of hybrid host.
  """
  def create_cgroup!(controllers) do
    name = "proton_stream_test_" <> rand_hex()
    spec = Enum.join(controllers, ",") <> ":" <> name
    {out, status} = System.cmd("cgcreate", ["-g", spec], stderr_to_stdout: true)
    assert status == 0, "cgcreate -g #{spec} failed: #{out}"

    # ps_port also makes NAME in the controller-less v2 tree of a hybrid host
    # (/sys/fs/cgroup/unified), and may leave it there when two groups under
    # NAME overlap.
    ExUnit.Callbacks.on_exit(fn ->
      for controller <- ["unified" | controllers],
          do: remove_cgroup_dir(cgroup_dir(controller, name))
    end)

    name
  end

  defp remove_cgroup_dir(dir) do
    case File.ls(dir) do
      {:ok, entries} ->
        for entry <- entries,
            File.dir?(Path.join(dir, entry)),
            do: remove_cgroup_dir(Path.join(dir, entry))

        File.rmdir(dir)

      {:error, _} ->
        :ok
    end
  end

  @doc "The directory of cgroup `path` under v1 `controller`."
  def cgroup_dir(controller, path), do: Path.join(["/sys/fs/cgroup", controller, path])
end

ProtonStreamTest.Helpers.setup_bin_dir!()
ExUnit.start(capture_log: true)
