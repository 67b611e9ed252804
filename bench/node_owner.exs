# Node mode with many children of one owner (issue 13): every child's
# queue_len poll sees the others' messages, so flow control counts the
# owner's queue on the owner's node, once per round for all of its children
# (docs/node.md, "Flow control").
#
# bench.exs runs it as the scenario `node_owner` (Bench.NodeOwner.run/2), on
# the bench's node, with a plain Port beside it where one compares:
#
#   * all at once: N children of `head -c BYTES /dev/zero`, all read by this
#     process as their messages come;
#   * one after another: N children, read to their end one at a time with a
#     selective receive, the others' windows waiting in the mailbox;
#   * idle owner: N children of `head -c 10MB`, this process reading nothing
#     for a while: the CPU its VM and the node spend meanwhile (polls and
#     counts of a queue nobody reads).

defmodule Bench.NodeOwner do
  @moduledoc false

  alias Bench.Impl

  @doc """
  `rounds` runs of each case. `sizes`: `{n, bytes}` for all at once and for
  one after another, and `{n, idle_ms}` for the idle owner. Returns a map of
  samples.
  """
  def run(%{at_once: at_once, one_by_one: one_by_one, idle: idle}, rounds) do
    runs =
      for _ <- 1..rounds do
        %{
          at_once:
            for(
              impl <- [:plain, :node],
              into: %{},
              do: {impl, in_task(fn -> at_once(impl, at_once) end)}
            ),
          one_by_one:
            for(
              impl <- [:plain, :node],
              into: %{},
              do: {impl, in_task(fn -> one_by_one(impl, one_by_one) end)}
            ),
          idle: in_task(fn -> idle(idle) end)
        }
      end

    %{sizes: %{at_once: at_once, one_by_one: one_by_one, idle: idle}, runs: runs}
  end

  # Each run in a process of its own: what it leaves (its children, their
  # messages) goes with it.
  defp in_task(fun) do
    result = Task.async(fun) |> Task.await(600_000)
    wait_no_children()
    result
  end

  defp at_once(impl, {n, bytes}) do
    t0 = System.monotonic_time(:microsecond)
    hs = open(impl, n, bytes)
    got = drain_all(impl, Map.new(hs, &{&1, 0}), n)
    ms = (System.monotonic_time(:microsecond) - t0) / 1000
    for {_, g} <- got, do: Bench.Integrity.record!(impl, "#{n} children of one owner", bytes, g)
    ms
  end

  defp one_by_one(impl, {n, bytes}) do
    t0 = System.monotonic_time(:microsecond)
    hs = open(impl, n, bytes)

    for h <- hs,
        do: Bench.Integrity.record!(impl, "#{n} children read in turn", bytes, drain(impl, h, 0))

    (System.monotonic_time(:microsecond) - t0) / 1000
  end

  defp idle({n, idle_ms}) do
    node_os = :persistent_term.get({Bench.Node, :main}).os_pid
    _ = open(:node, n, 10_000_000)
    # Let the windows fill before measuring.
    Process.sleep(min(2000, idle_ms))
    {vm0, node0} = {cpu_ms(System.pid()), cpu_ms(node_os)}
    Process.sleep(idle_ms)
    {vm1, node1} = {cpu_ms(System.pid()), cpu_ms(node_os)}
    %{vm: (vm1 - vm0) * 1000 / idle_ms, node: (node1 - node0) * 1000 / idle_ms}
  end

  defp open(impl, n, bytes),
    do:
      for(
        _ <- 1..n,
        do: Impl.open(impl, "head", ["-c", Integer.to_string(bytes), "/dev/zero"], [])
      )

  defp drain_all(_impl, got, 0), do: got

  defp drain_all(impl, got, running) do
    receive do
      {h, {:data, d}} when is_map_key(got, h) ->
        drain_all(impl, Map.update!(got, h, &(&1 + byte_size(d))), running)

      {h, {:exit_status, 0}} when is_map_key(got, h) ->
        drain_all(impl, got, running - 1)

      {:EXIT, h, :normal} when impl == :node and is_map_key(got, h) ->
        drain_all(impl, got, running - 1)
    after
      60_000 -> raise "#{impl}: no message for 60 s, #{running} children running"
    end
  end

  defp drain(impl, h, acc) do
    receive do
      {^h, {:data, d}} -> drain(impl, h, acc + byte_size(d))
      {^h, {:exit_status, 0}} -> acc
      {:EXIT, ^h, :normal} when impl == :node -> acc
    after
      60_000 -> raise "#{impl}: no message for 60 s after #{acc} bytes"
    end
  end

  # user + system CPU of an OS process, in ms (clock ticks of 10 ms).
  defp cpu_ms(os_pid) do
    [_, rest] = :binary.split(File.read!("/proc/#{os_pid}/stat"), ") ")
    f = String.split(rest, " ")
    (String.to_integer(Enum.at(f, 11)) + String.to_integer(Enum.at(f, 12))) * 10
  end

  # Until the node and this VM have no child process left (the node kills a
  # gone owner's children; plain Ports' `head`s end by themselves).
  defp wait_no_children(deadline \\ System.monotonic_time(:millisecond) + 30_000) do
    node_os = :persistent_term.get({Bench.Node, :main}).os_pid

    cond do
      children(node_os) == 0 ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        raise "the node still has #{children(node_os)} children 30 s after their owner"

      true ->
        Process.sleep(20)
        wait_no_children(deadline)
    end
  end

  defp children(os_pid) do
    Path.wildcard("/proc/#{os_pid}/task/*/children")
    |> Enum.map(&(File.read!(&1) |> String.split()))
    |> Enum.map(&length/1)
    |> Enum.sum()
  end

  @doc "The result of run/2 as a markdown section for docs/benchmarks.md."
  def markdown(%{sizes: s, runs: runs}) do
    ms = fn case, impl -> for r <- runs, do: r[case][impl] end
    cpu = fn key -> for r <- runs, do: r.idle[key] end
    {n1, b1} = s.at_once
    {n2, b2} = s.one_by_one
    {n3, idle_ms} = s.idle

    """

    ### Node mode, many children of one owner (bench/node_owner.exs)

    Every child's queue-length poll sees the others' messages, so flow control
    counts the owner's queue on its node, once per round for all its children.
    #{length(runs)} runs each; median (min–max). A plain Port has no flow control:
    its children's output waits in the owner's mailbox whole.

    | case | plain Port | node mode | node / plain |
    |---|---|---|---|
    | #{n1} × `head -c #{b1}` at once, read as it comes (ms) | #{range(ms.(:at_once, :plain))} | #{range(ms.(:at_once, :node))} | #{ratio(ms.(:at_once, :node), ms.(:at_once, :plain))} |
    | #{n2} × `head -c #{b2}`, read one after another (ms) | #{range(ms.(:one_by_one, :plain))} | #{range(ms.(:one_by_one, :node))} | #{ratio(ms.(:one_by_one, :node), ms.(:one_by_one, :plain))} |

    An owner of #{n3} children of `head -c 10MB` that reads nothing for #{idle_ms} ms
    (their windows full): CPU per second of its VM #{range(cpu.(:vm))} ms, of the node
    #{range(cpu.(:node))} ms.
    """
  end

  defp range(xs), do: "#{fmt(median(xs))} (#{fmt(Enum.min(xs))}–#{fmt(Enum.max(xs))})"
  defp ratio(a, b), do: "#{:erlang.float_to_binary(median(a) / median(b), decimals: 2)}×"

  defp median(xs) do
    s = Enum.sort(xs)
    Enum.at(s, div(length(s), 2))
  end

  defp fmt(x), do: :erlang.float_to_binary(x / 1, decimals: 0)
end
