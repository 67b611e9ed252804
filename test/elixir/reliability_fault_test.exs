defmodule ProtonStreamTest.ReliabilityFaultTest do
  # A BEAM that uses ProtonStream is SIGKILLed while 50 programs run
  # (docs/reliability.md), with the shared ps_port (the default) and with
  # isolated: true. Needs root for the cgroups, as the cgroup tests.
  use ExUnit.Case, async: false

  alias ProtonStreamTest.Helpers

  @moduletag :cgroup
  @moduletag timeout: 120_000

  # The kinds of programs: ignoring SIGTERM, with grandchildren, one in its
  # own session, a double-forked daemon, a plain one.
  @scripts [
    "trap '' TERM; sleep 1000",
    "trap '' TERM; setsid sleep 1000 & sleep 1000 & wait",
    "sleep 1000 & sleep 1000 & wait",
    ~s{trap '' TERM; (setsid sh -c 'trap "" TERM; sleep 1000' &); sleep 1000},
    "exec cat"
  ]

  # Run by a second BEAM: opens 50 programs through ProtonStream (every
  # second one in a memory+pids cgroup under BASE), says their OS pids and
  # its own, and waits to be killed. MODE is "shared" or "isolated".
  @script ~S"""
  [tag, base, mode | scripts] = System.argv()
  {:ok, _} = Application.ensure_all_started(:proton_stream)
  iso = if mode == "isolated", do: [isolated: true], else: []

  pids =
    for i <- 0..49 do
      cg =
        if rem(i, 2) == 0,
          do: [cgroup_controllers: ["memory", "pids"], cgroup_base: base],
          else: []

      script = Enum.at(scripts, rem(i, length(scripts)))
      {:ok, ps} = ProtonStream.open("sh", ["-c", script], [env: [{"PS_REL_TAG", tag}]] ++ cg ++ iso)
      ProtonStream.os_pid(ps)
    end

  IO.puts("pids #{Enum.join(pids, " ")}")
  IO.puts("beam #{System.pid()}")
  Process.sleep(:infinity)
  """

  for mode <- [:shared, :isolated] do
    @tag mode: mode
    test "a BEAM SIGKILLed with 50 programs running leaves no process and no cgroup behind (#{mode})",
         %{mode: mode} do
      sigkilled_beam(mode)
    end
  end

  defp sigkilled_beam(mode) do
    tag = "rel" <> Helpers.rand_hex(6)
    base = Helpers.create_cgroup!(["memory", "pids"])
    script = Path.join(System.tmp_dir!(), "reliability_beam_#{Helpers.rand_hex()}.exs")
    File.write!(script, @script)
    on_exit(fn -> File.rm(script) end)
    ebin = Path.join(:code.lib_dir(:proton_stream), "ebin")

    port =
      Port.open({:spawn_executable, System.find_executable("elixir")}, [
        :binary,
        :exit_status,
        {:line, 65536},
        args: ["-pa", ebin, script, tag, base, Atom.to_string(mode) | @scripts]
      ])

    {children, beam} = read_started(port, nil, nil)
    on_exit(fn -> kill_tagged(tag) end)
    assert length(children) == 50
    tagged = wait_stable(tag, 100)
    helpers = Helpers.os_descendants(beam) -- tagged
    # Isolated: ps_port for the 25 children with a cgroup, ps_port_lean for
    # the others.
    ps_ports =
      Enum.count(
        helpers,
        &(File.read("/proc/#{&1}/comm") in [{:ok, "ps_port\n"}, {:ok, "ps_port_lean\n"}])
      )

    assert ps_ports == if(mode == :shared, do: 1, else: 50)
    assert groups_under(base) == 25

    start = System.monotonic_time(:millisecond)
    System.cmd("kill", ["-KILL", Integer.to_string(beam)])

    assert Helpers.wait_until(
             fn -> Enum.all?(tagged, &(not Helpers.os_pid_alive?(&1))) end,
             3000
           ),
           "still alive: #{inspect(Enum.filter(tagged, &Helpers.os_pid_alive?/1))}"

    trees = System.monotonic_time(:millisecond) - start

    assert Helpers.wait_until(
             fn -> Enum.all?(helpers, &(not Helpers.os_pid_alive?(&1))) end,
             3000
           )

    assert Helpers.wait_until(fn -> groups_under(base) == 0 end, 3000)
    all = System.monotonic_time(:millisecond) - start
    assert tagged_pids(tag) == []

    if System.get_env("RELIABILITY_REPORT") do
      IO.puts(
        "\nBEAM SIGKILLed with 50 ProtonStream programs (#{mode}, #{length(tagged)} processes): " <>
          "trees gone after #{trees} ms, ps_ports and cgroups after #{all} ms"
      )
    end

    assert trees <= 1000 + Helpers.slack_ms(), "the programs' trees took #{trees} ms"
    assert all <= 1500 + Helpers.slack_ms(), "ps_ports and cgroups took #{all} ms"
  end

  defp read_started(port, children, beam) do
    receive do
      {^port, {:data, {:eol, "pids " <> rest}}} ->
        read_started(port, Enum.map(String.split(rest), &String.to_integer/1), beam)

      {^port, {:data, {:eol, "beam " <> pid}}} ->
        {children, String.to_integer(pid)}

      {^port, {:data, _}} ->
        read_started(port, children, beam)

      {^port, {:exit_status, status}} ->
        flunk("the second BEAM exited with status #{status}")
    after
      60_000 -> flunk("the second BEAM did not start its programs")
    end
  end

  # Processes whose environment carries PS_REL_TAG=tag.
  defp tagged_pids(tag) do
    kv = "PS_REL_TAG=" <> tag

    for entry <- File.ls!("/proc"),
        Regex.match?(~r/\A\d+\z/, entry),
        pid = String.to_integer(entry),
        Helpers.os_pid_alive?(pid),
        {:ok, env} <- [File.read("/proc/#{entry}/environ")],
        kv in String.split(env, <<0>>),
        do: pid
  end

  defp wait_stable(tag, min) do
    assert Helpers.wait_until(fn -> length(tagged_pids(tag)) >= min end, 20_000)
    Process.sleep(300)
    tagged_pids(tag)
  end

  defp kill_tagged(tag) do
    for pid <- tagged_pids(tag), do: System.cmd("kill", ["-KILL", Integer.to_string(pid)])
  end

  defp groups_under(base) do
    dir = Helpers.cgroup_dir("memory", base)

    case File.ls(dir) do
      {:ok, entries} -> Enum.count(entries, &File.dir?(Path.join(dir, &1)))
      {:error, _} -> 0
    end
  end
end
