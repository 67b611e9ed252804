defmodule ProtonStreamTest.ReliabilityLoadTest do
  # The shared ps_port and isolated: true under load through the shim
  # (docs/reliability.md): this VM is the node whose descriptors, zombies
  # and memory are counted. Node mode's
  # load test is test/go/reliability_load_test.go.
  use ExUnit.Case, async: false

  alias ProtonStreamTest.Helpers

  @moduletag :cgroup
  @moduletag timeout: 600_000

  for mode <- [:shared, :isolated] do
    @tag mode: mode
    test "2 000 opens in a row and 200 at once leave no zombie, descriptor, cgroup or memory behind (#{mode})",
         %{mode: mode} do
      load(ProtonStreamTest.Mode.context(mode))
    end
  end

  defp load(%{m: m, mode: mode}) do
    base = Helpers.create_cgroup!(["pids"])
    cg = [cgroup_controllers: ["pids"], cgroup_base: base] ++ m

    # Warm up: the code, the allocators, a burst larger than the load's.
    :ok = open_seq(50, fn i -> if rem(i, 10) == 0, do: cg, else: m end)
    :ok = open_par(250, m)
    before = settle(base)

    {seq_us, :ok} =
      :timer.tc(fn -> open_seq(2000, fn i -> if rem(i, 10) == 0, do: cg, else: m end) end)

    {par_us, :ok} = :timer.tc(fn -> open_par(200, m) end)
    after_ = settle(base)

    report =
      "#{mode} (shim): 2 000 opens in a row #{div(seq_us, 1000)} ms " <>
        "(#{Float.round(seq_us / 2000 / 1000, 1)} ms each, a tenth in cgroups), 200 at once #{div(par_us, 1000)} ms; " <>
        "fds #{before.fds} -> #{after_.fds}, RSS #{before.rss} -> #{after_.rss} KiB, " <>
        "#{length(after_.zombies)} zombies, #{after_.groups} cgroups, #{after_.helpers} ps_ports " <>
        "and #{after_.programs} programs left"

    if System.get_env("RELIABILITY_REPORT"), do: IO.puts("\n" <> report)

    assert after_.fds <= before.fds, report
    assert after_.zombies == [], report
    assert after_.groups == 0, report
    assert after_.helpers == 0, report
    assert after_.programs == 0, report
    assert after_.rss <= before.rss * 1.10, report
  end

  # n programs in a row: cat echoes a line, then eof and a normal exit.
  defp open_seq(n, opts_of) do
    Enum.reduce_while(1..n, :ok, fn i, :ok ->
      line = "#{i}\n"
      {:ok, ps} = ProtonStream.open("cat", [], opts_of.(i))
      ProtonStream.command(ps, line)
      ProtonStream.eof(ps)

      case Helpers.collect(ps) do
        %{stdout: ^line, exit: :normal} -> {:cont, :ok}
        other -> {:halt, {:bad, i, other}}
      end
    end)
  end

  # n programs at once, each opened, echoing and closed by its own process.
  defp open_par(n, opts) do
    1..n
    |> Enum.map(fn i ->
      Task.async(fn ->
        line = "#{i}\n"
        {:ok, ps} = ProtonStream.open("cat", [], opts)
        ProtonStream.command(ps, line)

        receive do
          {^ps, {:data, ^line}} -> :ok
        after
          30_000 -> flunk("no echo from #{i}")
        end

        ProtonStream.close(ps)

        receive do
          {^ps, :closed} -> :ok
        after
          30_000 -> flunk("no :closed from #{i}")
        end
      end)
    end)
    |> Task.await_many(120_000)
    |> Enum.uniq()
    |> case do
      [:ok] -> :ok
      other -> other
    end
  end

  # Waits until nothing the programs left is there any more (or 10 s +
  # slack; ps_ports and programs gone, zombies reaped, cgroups removed:
  # each may lag on a loaded machine), then
  # counts: this VM's descriptors and RSS (after a GC of every process),
  # zombies among its children and erl_child_setup's, cgroups under base,
  # ps_port processes still running (but the suite's node and the shared
  # one, which stays), and programs still under the shared one.
  defp settle(base) do
    beam = String.to_integer(System.pid())

    Helpers.wait_until(
      fn ->
        c = count(beam, base)
        c.helpers + c.programs == 0 and c.zombies == [] and c.groups == 0
      end,
      10_000
    )

    for p <- Process.list(), do: :erlang.garbage_collect(p)
    Process.sleep(1000)
    for p <- Process.list(), do: :erlang.garbage_collect(p)
    count(beam, base)
  end

  defp count(beam, base) do
    setup = for {pid, :erl_child_setup} <- children(beam), do: pid
    kids = for p <- [beam | setup], {pid, name} <- children(p), do: {pid, name}

    %{
      fds: length(File.ls!("/proc/#{beam}/fd")),
      rss: rss(beam),
      zombies: for({pid, _} <- kids, state(pid) == "Z", do: pid),
      helpers:
        Enum.count(kids, fn {pid, name} ->
          # isolated: ps_port_lean, or ps_port for a child with a cgroup
          name in [:ps_port, :ps_port_lean] and helper_kind(pid) not in ["node", "--shared"]
        end),
      programs:
        Enum.sum(
          for {pid, :ps_port} <- kids, helper_kind(pid) == "--shared", do: length(children(pid))
        ),
      groups: groups_under(base)
    }
  end

  defp children(parent) do
    for entry <- File.ls!("/proc"),
        Regex.match?(~r/\A\d+\z/, entry),
        pid = String.to_integer(entry),
        Helpers.os_ppid(pid) == parent,
        {:ok, comm} <- [File.read("/proc/#{entry}/comm")],
        do: {pid, comm |> String.trim() |> String.to_atom()}
  end

  # ps_port's first argument: "node" for the suite's ps_port node
  # (test_helper.exs), a child of this VM too; "--shared" for the shared one.
  defp helper_kind(pid) do
    case File.read("/proc/#{pid}/cmdline") do
      {:ok, cmdline} -> Enum.at(String.split(cmdline, <<0>>), 1)
      {:error, _} -> nil
    end
  end

  defp state(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, stat} -> stat |> String.split(") ", parts: 2) |> List.last() |> binary_part(0, 1)
      _ -> "gone"
    end
  end

  defp rss(pid) do
    [kb] =
      Regex.run(~r/VmRSS:\s+(\d+)/, File.read!("/proc/#{pid}/status"), capture: :all_but_first)

    String.to_integer(kb)
  end

  defp groups_under(base) do
    dir = Helpers.cgroup_dir("pids", base)

    case File.ls(dir) do
      {:ok, entries} -> Enum.count(entries, &File.dir?(Path.join(dir, &1)))
      {:error, _} -> 0
    end
  end
end
