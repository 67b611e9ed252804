# The main job of ProtonStream in one run: a program streams to its Elixir
# owner inside a cgroup with a memory limit, and when the owner dies, the
# program and the daemon it left behind are gone.
#
#     make demo        (or: cd elixir_shim && mix run ../examples/demo.exs)

defmodule Demo do
  def say(text), do: IO.puts(IO.ANSI.format([:cyan, "demo: ", :reset, text]))

  def alive?(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} -> not String.contains?(stat, ") Z ")
      {:error, _} -> false
    end
  end

  # A cgroup base like `cgcreate -g memory:proton_stream_demo` makes, when we
  # are root on a host with the v1 memory controller.
  def cgroup_opts do
    base = "/sys/fs/cgroup/memory/proton_stream_demo"

    if File.dir?("/sys/fs/cgroup/memory") and File.mkdir_p(base) == :ok do
      [
        cgroup_controllers: ["memory"],
        cgroup_base: "proton_stream_demo",
        cgroup_sets: [{"memory", "memory.limit_in_bytes", "67108864"}]
      ]
    else
      say("no writable memory cgroup here: running without limits")
      []
    end
  end

  def stream(ps) do
    receive do
      {^ps, {:data, data}} ->
        IO.write("  stdout | " <> data)
        stream(ps)

      {^ps, {:error, data}} ->
        IO.write("  stderr | " <> data)
        stream(ps)

      {:EXIT, ^ps, reason} ->
        say("program ended: #{inspect(reason)}")
    after
      10_000 -> raise "demo: no output for 10 s"
    end
  end
end

Process.flag(:trap_exit, true)
Demo.say("ps_port is #{ProtonStream.muontrap_path()}")

# 1. Streaming, both ways, inside a memory-limited cgroup.
script = """
echo "my memory limit: $(cat /sys/fs/cgroup/memory$(grep :memory: /proc/self/cgroup | cut -d: -f3)/memory.limit_in_bytes 2>/dev/null || echo none)"
for i in 1 2 3; do echo "tick $i"; sleep 0.2; done
echo "to stderr" >&2
read line; echo "you said: $line"
"""

{:ok, ps} = ProtonStream.open("sh", ["-c", script], Demo.cgroup_opts())
Demo.say("started sh as OS pid #{ProtonStream.os_pid(ps)}")
send(ps, {self(), {:command, "hello from Elixir\n"}})
Demo.stream(ps)

# 2. The owner dies: the program and a daemon it double-forked go too.
parent = self()
daemon_script = "(setsid sh -c 'echo $$; exec sleep 1000' &); exec sleep 1000"

owner =
  spawn(fn ->
    {:ok, ps} = ProtonStream.open("sh", ["-c", daemon_script], delay_to_sigkill: 200)

    receive do
      {^ps, {:data, line}} ->
        send(parent, {:pids, ProtonStream.os_pid(ps), String.to_integer(String.trim(line))})
    end

    Process.sleep(:infinity)
  end)

receive do
  {:pids, os_pid, daemon} ->
    Demo.say("owner #{inspect(owner)} runs sleep (#{os_pid}); its daemon is #{daemon}")
    Demo.say("killing the owner")
    Process.exit(owner, :kill)
    Process.sleep(400)

    for pid <- [os_pid, daemon] do
      Demo.say("OS pid #{pid} alive 400 ms later? #{Demo.alive?(pid)}")
    end
after
  5_000 -> raise "demo: second program did not start"
end
