# The scenarios of issue 5. Each function runs one implementation once and
# returns a map of figures; Bench.Integrity counts every payload byte written
# and delivered, and raises at the first difference.

defmodule Bench.Integrity do
  @moduledoc false

  def reset, do: :persistent_term.put(__MODULE__, %{})
  def totals, do: :persistent_term.get(__MODULE__, %{})

  @doc "Records a run; raises (loudly) when delivered != written."
  def record!(impl, what, written, delivered) do
    t = totals()
    {w, d, runs} = Map.get(t, impl, {0, 0, 0})
    :persistent_term.put(__MODULE__, Map.put(t, impl, {w + written, d + delivered, runs + 1}))

    if written != delivered do
      raise Bench.IntegrityError,
        message:
          "INTEGRITY FAILURE: #{Bench.Impl.label(impl)} delivered #{delivered} bytes of " <>
            "#{written} written (#{what})"
    end

    :ok
  end
end

defmodule Bench.IntegrityError do
  defexception [:message]
end

defmodule Bench.Scenarios do
  @moduledoc false

  alias Bench.Impl

  @recv_timeout 60_000

  defp now, do: :erlang.monotonic_time(:nanosecond)

  ## 1. Throughput: `head -c BYTES /dev/zero`, MB/s at the owner

  def throughput(impl, bytes, opts) do
    t0 = now()
    h = Impl.open(impl, "head", ["-c", Integer.to_string(bytes), "/dev/zero"], opts)
    got = drain(impl, h, 0)
    dt = now() - t0
    Bench.Integrity.record!(impl, "throughput #{inspect(opts)}", bytes, got)
    %{mbps: bytes * 1000 / dt}
  end

  defp drain(:plain, port, acc) do
    receive do
      {^port, {:data, d}} -> drain(:plain, port, acc + byte_size(d))
      {^port, {:exit_status, 0}} -> acc
      {^port, {:exit_status, s}} -> raise "plain port: head exited with #{s}"
    after
      @recv_timeout -> raise "plain port: no data for #{@recv_timeout} ms"
    end
  end

  defp drain(impl, h, acc) do
    receive do
      {^h, {:data, d}} -> drain(impl, h, acc + byte_size(d))
      {:EXIT, ^h, :normal} -> acc
      {:EXIT, ^h, reason} -> raise "#{impl}: head exited with #{inspect(reason)}"
    after
      @recv_timeout -> raise "#{impl}: no data for #{@recv_timeout} ms"
    end
  end

  ## 1b. Throughput, N children at once: total MB/s at the owner (one
  ## process per child, each draining its own)

  def throughput_par(impl, bytes, n) do
    t0 = now()

    got =
      1..n
      |> Enum.map(fn _ ->
        Task.async(fn ->
          Process.flag(:trap_exit, true)
          h = Impl.open(impl, "head", ["-c", Integer.to_string(bytes), "/dev/zero"], [])
          drain(impl, h, 0)
        end)
      end)
      |> Task.await_many(600_000)

    dt = now() - t0

    for g <- got,
        do: Bench.Integrity.record!(impl, "throughput, #{n} at once", bytes, g)

    %{mbps: n * bytes * 1000 / dt}
  end

  ## 1c. Fan-in: N children at once, all read by one owner (this process):
  ## total MB/s. In node mode every child's queue length counts the others'
  ## messages, so flow control counts the owner's queue (docs/node.md).

  def fan_in(impl, n, bytes) do
    t0 = now()

    handles =
      for _ <- 1..n,
          do: Impl.open(impl, "head", ["-c", Integer.to_string(bytes), "/dev/zero"], [])

    got = fan_in_drain(impl, Map.new(handles, &{&1, 0}), n)
    dt = now() - t0

    for {_, g} <- got, do: Bench.Integrity.record!(impl, "fan-in of #{n}", bytes, g)
    %{mbps: n * bytes * 1000 / dt}
  end

  defp fan_in_drain(_impl, got, 0), do: got

  defp fan_in_drain(impl, got, running) do
    receive do
      {h, {:data, d}} when is_map_key(got, h) ->
        fan_in_drain(impl, Map.update!(got, h, &(&1 + byte_size(d))), running)

      {h, {:exit_status, 0}} when impl == :plain and is_map_key(got, h) ->
        fan_in_drain(impl, got, running - 1)

      {:EXIT, h, :normal} when impl != :plain and is_map_key(got, h) ->
        fan_in_drain(impl, got, running - 1)

      {h, {:exit_status, s}} when is_map_key(got, h) ->
        raise "#{impl}: head exited with #{s}"

      {:EXIT, h, reason} when is_map_key(got, h) ->
        raise "#{impl}: head exited with #{inspect(reason)}"
    after
      @recv_timeout ->
        raise "#{impl}: fan-in: no data for #{@recv_timeout} ms, #{running} running"
    end
  end

  ## 2. Round trip: SIZE-byte messages through `cat`, one at a time

  def round_trip(impl, count, size, warmup) do
    h = Impl.open(impl, "cat", [])
    filler = :binary.copy(<<?x>>, size - 4)
    for i <- 1..warmup, do: echo(impl, h, <<i::32, filler::binary>>, size)

    times =
      for i <- 1..count do
        msg = <<i::32, filler::binary>>
        t0 = now()
        echo(impl, h, msg, size)
        now() - t0
      end

    finish_cat(impl, h)
    Bench.Integrity.record!(impl, "round trip", (warmup + count) * size, (warmup + count) * size)
    sorted = Enum.sort(times)
    %{rt_median: pct(sorted, 50) / 1000, rt_p99: pct(sorted, 99) / 1000}
  end

  defp echo(impl, h, msg, size) do
    Impl.command(impl, h, msg)
    back = recv_n(impl, h, size, [])

    if back != msg do
      raise Bench.IntegrityError,
        message:
          "INTEGRITY FAILURE: #{Impl.label(impl)} echoed #{byte_size(back)} bytes that differ " <>
            "from the #{size} sent through cat"
    end
  end

  defp recv_n(_impl, _h, 0, acc), do: IO.iodata_to_binary(acc)

  defp recv_n(impl, h, left, acc) do
    receive do
      {^h, {:data, d}} when byte_size(d) <= left -> recv_n(impl, h, left - byte_size(d), [acc, d])
      {^h, {:data, d}} -> raise "#{impl}: cat echoed #{byte_size(d)} bytes, wanted #{left}"
    after
      @recv_timeout -> raise "#{impl}: no echo from cat for #{@recv_timeout} ms"
    end
  end

  defp finish_cat(:plain, port), do: Port.close(port)

  defp finish_cat(impl, h) do
    send(h, {self(), :eof})
    :normal = Impl.await_exit(impl, h)
  end

  ## 3. Spawn: open `true` and wait for its exit; ms each

  def spawn_seq(impl, count) do
    t0 = now()
    for _ <- 1..count, do: spawn_one(impl)
    %{spawn_seq: (now() - t0) / count / 1.0e6}
  end

  def spawn_par(impl, count, at_once) do
    per = max(div(count, at_once), 1)
    t0 = now()

    1..at_once
    |> Enum.map(fn _ -> Task.async(fn -> for _ <- 1..per, do: spawn_one(impl) end) end)
    |> Task.await_many(120_000)

    %{spawn_par: (now() - t0) / (per * at_once) / 1.0e6}
  end

  defp spawn_one(impl) do
    h = Impl.open(impl, "true", [])

    case Impl.await_exit(impl, h) do
      ok when ok in [0, :normal] -> :ok
      other -> raise "#{impl}: `true` exited with #{inspect(other)}"
    end
  end

  ## 4. Kill: the owner is killed; ms until the child and its grandchild are gone

  # The child starts a grandchild, prints its pid and waits on stdin. For the
  # plain Port it is also what takes the grandchild down, on stdin EOF: the
  # best a plain Port can do. Under ps_port both die of the SIGTERM.
  @kill_script "sleep 600 & echo $!; read x; kill $!"

  def kill(impl, samples) do
    ms =
      for _ <- 1..samples do
        kill_once(impl)
      end

    %{kill: ms}
  end

  defp kill_once(impl) do
    parent = self()

    owner =
      spawn(fn ->
        h = Impl.open(impl, "sh", ["-c", @kill_script])
        child = Impl.os_pid(impl, h)
        grandchild = h |> line(impl, "") |> String.trim() |> String.to_integer()
        send(parent, {:pids, self(), child, grandchild})
        Process.sleep(:infinity)
      end)

    receive do
      {:pids, ^owner, child, grandchild} ->
        t0 = now()
        Process.exit(owner, :kill)
        wait_gone([child, grandchild], t0, 10_000)
    after
      30_000 -> raise "#{impl}: kill scenario child did not start"
    end
  end

  defp line(h, impl, acc) do
    receive do
      {^h, {:data, d}} ->
        acc = acc <> d
        if String.ends_with?(acc, "\n"), do: acc, else: line(h, impl, acc)
    after
      10_000 -> raise "#{impl}: no pid line from the kill script"
    end
  end

  # pause_ms between two looks: 0 for the sub-millisecond figures (kill,
  # close); the mass kill looks every 2 ms, since a look at 1 000 pids
  # without a pause keeps one of the two cores busy, taking it from the
  # kill being measured (node_scale.exs pauses 5 ms).
  defp wait_gone(pids, t0, timeout_ms, pause_ms \\ 0) do
    case Enum.filter(pids, &alive?/1) do
      [] ->
        (now() - t0) / 1.0e6

      left ->
        if now() - t0 > timeout_ms * 1_000_000 do
          raise "processes #{inspect(left)} still alive #{timeout_ms} ms after their owner died"
        end

        if pause_ms > 0, do: Process.sleep(pause_ms)
        wait_gone(left, t0, timeout_ms, pause_ms)
    end
  end

  @doc "Whether OS process `pid` exists and is not a zombie."
  def alive?(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, stat} ->
        [_, rest] = :binary.split(stat, ") ")
        not String.starts_with?(rest, ["Z", "X"])

      {:error, _} ->
        false
    end
  end

  ## 4b. Close: `cat` is closed; ms until it is gone (or a zombie)

  # The plain Port closes its port: cat sees EOF and exits. ProtonStream's
  # close stops the program (SIGTERM to its group).
  def close_gone(impl, samples) do
    ms =
      for _ <- 1..samples do
        h = Impl.open(impl, "cat", [])
        os = Impl.os_pid(impl, h)
        t0 = now()
        if impl == :plain, do: Port.close(h), else: send(h, {self(), :close})
        t = wait_gone([os], t0, 10_000)
        if impl != :plain, do: Impl.await_closed(impl, h)
        t
      end

    %{close: ms}
  end

  ## 4c. Mass kill: COUNT owners, one `sleep 600` each, all killed at once;
  ## ms until every child is gone. (No plain Port figure: `sleep` ignores
  ## its stdin, so a plain Port cannot stop it.)

  def mass_kill(:plain, _count), do: %{}

  def mass_kill(impl, count) do
    parent = self()

    owners =
      for _ <- 1..count do
        spawn(fn ->
          h = Impl.open(impl, "sleep", ["600"])
          send(parent, {:child, self(), Impl.os_pid(impl, h)})
          Process.sleep(:infinity)
        end)
      end

    children =
      for owner <- owners do
        receive do
          {:child, ^owner, os} -> os
        after
          120_000 -> raise "#{impl}: mass kill: a child did not start"
        end
      end

    # isolated: true's 1 000 ps_ports outlive their children by a moment;
    # the next implementation's run must not share the CPU with their exits.
    helpers = if impl == :isolated, do: Enum.map(children, &ppid/1), else: []

    t0 = now()
    for owner <- owners, do: Process.exit(owner, :kill)
    ms = wait_gone(children, t0, 120_000, 2)
    wait_gone(helpers, now(), 120_000, 2)
    Process.sleep(1_000)
    %{mass_kill: ms}
  end

  ## 5. Memory: COUNT children of `sleep 60` alive at once

  # isolated: RSS (and PSS) of each ps_port process, averaged; shared: growth
  # of a freshly started shared ps_port's RSS per child; node: growth of a
  # fresh node's RSS per child; plain: nothing outside the BEAM. For every
  # implementation also the BEAM's own growth per child.
  def memory(impl, count, ps_port) do
    fresh =
      case impl do
        :node -> Bench.Node.start_extra!(ps_port)
        :shared -> fresh_shared_port()
        _ -> nil
      end

    Process.sleep(200)
    base_rss = if fresh, do: rss_kib(fresh.os_pid), else: 0
    :erlang.garbage_collect()
    beam0 = :erlang.memory(:total)

    handles =
      for _ <- 1..count do
        h =
          if impl == :node,
            do: Bench.Node.with_node(fresh, fn -> Impl.open(:node, "sleep", ["60"]) end),
            else: Impl.open(impl, "sleep", ["60"])

        {h, Impl.os_pid(impl, h)}
      end

    Process.sleep(300)
    beam_per = (:erlang.memory(:total) - beam0) / count / 1024

    {rss, pss} =
      case impl do
        :plain ->
          {0.0, 0.0}

        :isolated ->
          helpers = Enum.map(handles, fn {_h, os} -> ppid(os) end)
          rss = Enum.map(helpers, &rss_kib/1)
          pss = Enum.map(helpers, &pss_kib/1)
          {Enum.sum(rss) / count, Enum.sum(pss) / count}

        helper when helper in [:node, :shared] ->
          grow = (rss_kib(fresh.os_pid) - base_rss) / count
          {grow, grow}
      end

    for {h, _} <- handles, do: Impl.close(impl, h)

    for {h, _} <- handles, do: Impl.await_closed(impl, h)

    if impl == :node, do: Bench.Node.stop_extra(fresh)
    %{mem_rss: rss, mem_pss: pss, mem_beam: beam_per}
  end

  # The shared ps_port started afresh (its router restarted by the
  # application's supervisor), running one program so it exists.
  defp fresh_shared_port do
    sup = ProtonStream.Supervisor
    :ok = Supervisor.terminate_child(sup, ProtonStream.SharedPort)
    {:ok, _} = Supervisor.restart_child(sup, ProtonStream.SharedPort)
    h = Impl.open(:shared, "true", [])
    Impl.await_exit(:shared, h)
    %{os_pid: ProtonStream.SharedPort.os_pid()}
  end

  defp ppid(pid) do
    [_, rest] = :binary.split(File.read!("/proc/#{pid}/stat"), ") ")
    [_state, ppid | _] = String.split(rest, " ")
    String.to_integer(ppid)
  end

  def rss_kib(pid), do: status_kib("/proc/#{pid}/status", "VmRSS:")
  defp pss_kib(pid), do: status_kib("/proc/#{pid}/smaps_rollup", "Pss:")

  defp status_kib(file, key) do
    file
    |> File.read!()
    |> String.split("\n")
    |> Enum.find_value(fn l ->
      if String.starts_with?(l, key) do
        [_, kb | _] = String.split(l)
        String.to_integer(kb)
      end
    end)
  end

  ## 6. Integrity with content: a file of random bytes through `cat FILE`

  def integrity(impl, file, size, digest) do
    h = Impl.open(impl, "cat", [file])
    {got, ctx} = drain_md5(impl, h, 0, :erlang.md5_init())
    Bench.Integrity.record!(impl, "cat of #{size} random bytes", size, got)

    if :erlang.md5_final(ctx) != digest do
      raise Bench.IntegrityError,
        message:
          "INTEGRITY FAILURE: #{Impl.label(impl)} delivered the right number of bytes " <>
            "of #{file} but not the same bytes (md5 differs)"
    end

    %{}
  end

  defp drain_md5(:plain, port, n, ctx) do
    receive do
      {^port, {:data, d}} -> drain_md5(:plain, port, n + byte_size(d), :erlang.md5_update(ctx, d))
      {^port, {:exit_status, 0}} -> {n, ctx}
    after
      @recv_timeout -> raise "plain port: no data for #{@recv_timeout} ms"
    end
  end

  defp drain_md5(impl, h, n, ctx) do
    receive do
      {^h, {:data, d}} -> drain_md5(impl, h, n + byte_size(d), :erlang.md5_update(ctx, d))
      {:EXIT, ^h, :normal} -> {n, ctx}
    after
      @recv_timeout -> raise "#{impl}: no data for #{@recv_timeout} ms"
    end
  end

  ## Helpers

  def pct(sorted, p) do
    n = length(sorted)
    Enum.at(sorted, max(ceil(n * p / 100) - 1, 0))
  end
end
