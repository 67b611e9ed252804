defmodule ProtonStreamTest.ReadmeBlocksTest do
  # Every ```elixir block of the repository's README.md and of
  # elixir_shim/README.md is run here, as written, in order, each README in
  # one process (a block may use what an earlier block of the same README
  # bound, like `ps`). Only the blocks in @skipped are not run; a new block
  # is run unless it is added there, and an entry that no longer matches a
  # block fails too. readme_test.exs checks the upstream examples in more
  # depth (OOM kill, CPU throttling, the supervised MyWorker restarting).
  #
  # What the blocks need is made here: the stand-in programs are on PATH
  # (test_helper.exs), the cgroup "mycgroup" the cgroup examples name is
  # created for the test, and the "second host" of the node-mode example is
  # a ps_port node on this host (@substitutions).
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO
  import ProtonStreamTest.Helpers

  @moduletag :node
  @moduletag timeout: 120_000

  @root Path.expand("../..", __DIR__)

  # {README, first line of the block} => why it is not run.
  @skipped %{
    {"README.md", "def deps do"} => "a mix.exs dependency snippet",
    {"elixir_shim/README.md", "def deps do"} => "a mix.exs dependency snippet",
    {"elixir_shim/README.md", ~s({:proton_stream, "~> 1.8", path: "../ps_port/elixir_shim"})} =>
      "a mix.exs dependency snippet"
  }

  # Text replaced in a README's blocks before they run: the second host of
  # the node-mode example is a ps_port node started here.
  @substitutions %{
    "elixir_shim/README.md" => [{~s(:"ps@build7.example.net"), :second_host_node}]
  }

  test "every block in the skip list exists" do
    for {{readme, first_line}, _why} <- @skipped do
      assert Enum.any?(blocks(readme), &(first_line(&1) == first_line)),
             "#{readme} has no ```elixir block starting with #{inspect(first_line)} any more; " <>
               "remove it from @skipped"
    end
  end

  describe "README.md" do
    test "its elixir blocks run" do
      output = run_readme("README.md", %{})
      assert output =~ "apple\npear\n"
      assert output =~ ~s(["1", "2", "3"])
      assert output =~ "Got: hello\n"
      assert output =~ "Linux\n"
    end
  end

  describe "elixir_shim/README.md" do
    @describetag :cgroup

    setup do
      # The cgroup examples name "mycgroup", made with cgcreate as the README says.
      refute File.exists?(cgroup_dir("cpu", "mycgroup")), "a cgroup mycgroup exists already"
      {_, 0} = System.cmd("cgcreate", ["-g", "memory,cpu:mycgroup"])
      # ps_port removes the programs' groups inside it once they are gone,
      # which may be a moment after the test.
      on_exit(fn ->
        assert wait_until(fn ->
                 remove_cgroup!(["memory", "cpu", "cpuacct", "pids"], "mycgroup")
                 not File.exists?(cgroup_dir("cpu", "mycgroup"))
               end)
      end)

      second_host = start_supervised!({ProtonStream.Node, allow: ["/usr/bin/*"]})
      %{second_host_node: ProtonStream.Node.name(second_host)}
    end

    test "its elixir blocks run", context do
      {output, stderr} = with_io(:stderr, fn -> run_readme("elixir_shim/README.md", context) end)

      assert output =~ "Got: hello\n"
      assert output =~ ~r/hello from ps_[0-9a-f]{8}@127.0.0.1\n/
      {:ok, host} = :inet.gethostname()
      assert output =~ "ran on #{host}\n"
      assert stderr =~ "my_command warning"
      assert output =~ "resized\n"
    end
  end

  # The README's ```elixir blocks, as {index, code}.
  defp blocks(readme) do
    text = File.read!(Path.join(@root, readme))

    ~r/^```elixir\n(.*?)^```$/ms
    |> Regex.scan(text, capture: :all_but_first)
    |> Enum.map(fn [code] -> code end)
  end

  defp first_line(code), do: code |> String.split("\n", parts: 2) |> hd() |> String.trim()

  # Runs the README's blocks in this process, threading the bindings, and
  # returns what they printed. Then stops what they started and linked to
  # this process (servers, supervisors, ps_port nodes), and waits for it.
  defp run_readme(readme, context) do
    substitutions =
      for {text, key} <- Map.get(@substitutions, readme, []),
          do: {text, inspect(Map.fetch!(context, key))}

    {:links, links_before} = Process.info(self(), :links)

    output =
      capture_io(fn ->
        readme
        |> blocks()
        |> Enum.with_index(1)
        |> Enum.reject(fn {code, _} -> Map.has_key?(@skipped, {readme, first_line(code)}) end)
        |> Enum.reduce([], fn {code, index}, binding ->
          code =
            Enum.reduce(substitutions, code, fn {from, to}, c -> String.replace(c, from, to) end)

          run_block(readme, index, code, binding)
        end)
      end)

    {:links, links_after} = Process.info(self(), :links)
    stop_all(links_after -- links_before)
    output
  end

  defp run_block(readme, index, code, binding) do
    {_result, binding} = Code.eval_string(code, binding, file: Path.join(@root, readme))
    binding
  rescue
    error ->
      flunk(
        "#{readme}, ```elixir block #{index} (#{inspect(first_line(code))}) raised:\n" <>
          Exception.format(:error, error, __STACKTRACE__)
      )
  end

  defp stop_all(pids) do
    Process.flag(:trap_exit, true)

    for pid <- pids, is_pid(pid) do
      Process.exit(pid, :shutdown)
      assert_receive {:EXIT, ^pid, _}, 15_000
    end
  end
end
