defmodule ProtonStreamTest.OptionsTest do
  # ProtonStream.Options.validate/4, and what every option does to a program
  # through the VM's shared ps_port (support/option_cases.exs).
  use ExUnit.Case, async: true
  use ProtonStreamTest.Cases.Options, mode: :shared

  alias ProtonStream.Options

  describe "validate/4" do
    test "normalizes to a map with the absolute command and the args" do
      assert Options.validate(:stream, "echo", ["a"], []) ==
               %{command: System.find_executable("echo"), args: ["a"]}
    end

    test "keeps every valid option" do
      opts = [
        cd: "/tmp",
        arg0: "zero",
        cgroup_controllers: ["memory", "cpu"],
        cgroup_path: "some/group",
        cgroup_sets: [
          {"memory", "memory.limit_in_bytes", 268_435_456},
          {"cpu", "cpu.shares", "512"}
        ],
        delay_to_sigkill: 250,
        uid: 65534,
        gid: "nogroup",
        stdio_window: 4096,
        stderr_to_stdout: true,
        capture_stderr_only: false,
        parallelism: true,
        env: %{"A" => "1"}
      ]

      assert Options.validate(:stream, "true", [], opts) == %{
               command: System.find_executable("true"),
               args: [],
               cd: "/tmp",
               arg0: "zero",
               cgroup_controllers: ["memory", "cpu"],
               cgroup_path: "some/group",
               cgroup_sets: [
                 {"memory", "memory.limit_in_bytes", "268435456"},
                 {"cpu", "cpu.shares", "512"}
               ],
               delay_to_sigkill: 250,
               uid: 65534,
               gid: "nogroup",
               stdio_window: 4096,
               stderr_to_stdout: true,
               capture_stderr_only: false,
               parallelism: true,
               env: [{~c"A", ~c"1"}]
             }
    end

    test "env becomes charlist pairs; nil and false unset" do
      assert %{env: [{~c"A", ~c"x"}, {~c"B", false}, {~c"C", false}]} =
               Options.validate(:stream, "true", [], env: [{"A", "x"}, {"B", nil}, {"C", false}])
    end

    test "cgroup_base becomes a random cgroup_path under it" do
      %{cgroup_path: path1, cgroup_base: "base"} =
        Options.validate(:stream, "true", [], cgroup_controllers: ["cpu"], cgroup_base: "base")

      %{cgroup_path: path2} =
        Options.validate(:stream, "true", [], cgroup_controllers: ["cpu"], cgroup_base: "base/")

      assert path1 =~ ~r"\Abase/[0-9a-f]{8}\z"
      assert path2 =~ ~r"\Abase/[0-9a-f]{8}\z"
      assert path1 != path2
    end

    test "a command that is not found raises ErlangError :enoent, as System.cmd does" do
      error =
        assert_raise ErlangError, fn ->
          Options.validate(:stream, "no_such_program_xyz", [], [])
        end

      assert error.original == :enoent
    end

    test "bad commands and arguments raise ArgumentError" do
      assert_raise ArgumentError, ~r/null byte/, fn ->
        Options.validate(:stream, "ec\0ho", [], [])
      end

      assert_raise ArgumentError, ~r/must be binaries/, fn ->
        Options.validate(:stream, "echo", [:a], [])
      end

      assert_raise ArgumentError, ~r/must be binaries/, fn ->
        Options.validate(:stream, "echo", [~c"a"], [])
      end

      assert_raise ArgumentError, ~r/null bytes/, fn ->
        Options.validate(:stream, "echo", ["a\0"], [])
      end

      assert_raise ArgumentError, ~r/command must be a binary/, fn ->
        Options.validate(:stream, ~c"echo", [], [])
      end

      assert_raise ArgumentError, ~r/list of binaries/, fn ->
        Options.validate(:stream, "echo", "a", [])
      end

      assert_raise ArgumentError, ~r/keyword list/, fn ->
        Options.validate(:stream, "echo", [], :bad)
      end

      assert_raise ArgumentError, ~r/keyword list/, fn ->
        Options.validate(:stream, "echo", [], [:bad])
      end
    end

    test "unknown options raise ArgumentError naming the option" do
      assert_raise ArgumentError, "invalid option :into with value \"\"", fn ->
        Options.validate(:stream, "echo", [], into: "")
      end

      assert_raise ArgumentError, ~r/:bogus/, fn -> ProtonStream.open("echo", [], bogus: 1) end
    end

    # {option, bad value} - each must raise an ArgumentError that names the option.
    @bad_values [
      cd: 1,
      cd: "",
      cd: ~c"/tmp",
      env: "A=1",
      env: [{"A", 1}],
      env: [{:A, "1"}],
      env: [{"", "1"}],
      env: [{"A=B", "1"}],
      env: [{"A", "a\0b"}],
      env: [:not_a_pair],
      env: 5,
      arg0: :zero,
      arg0: "",
      cgroup_controllers: "memory",
      cgroup_controllers: [:memory],
      cgroup_controllers: ["mem/ory"],
      cgroup_path: ~c"path",
      cgroup_path: "a\0b",
      cgroup_base: 12,
      cgroup_sets: {"memory", "memory.limit_in_bytes", "1"},
      cgroup_sets: [{"memory", "memory.limit_in_bytes"}],
      cgroup_sets: [{"memory", "limit_in_bytes", "1"}],
      cgroup_sets: [{"memory", "cpu.shares", "1"}],
      cgroup_sets: [{"memory", "memory.limit_in_bytes", :big}],
      cgroup_sets: [{"memory", "../memory.x", "1"}],
      delay_to_sigkill: -1,
      delay_to_sigkill: 1.5,
      delay_to_sigkill: "500",
      uid: -1,
      uid: "",
      uid: :root,
      gid: 1.0,
      gid: [],
      stdio_window: 0,
      stdio_window: -5,
      stdio_window: "10",
      stdin_limit: 0,
      stdin_limit: "1",
      node: "ps@host",
      node: :no_host,
      node: true,
      stderr_to_stdout: "true",
      stderr_to_stdout: nil,
      capture_stderr_only: 1,
      parallelism: :yes,
      isolated: "true",
      isolated: nil
    ]

    for {{key, value}, i} <- Enum.with_index(@bad_values) do
      @key key
      @value value
      test "#{i}: #{inspect(key)} with #{inspect(value)} raises naming #{inspect(key)}" do
        opts = bad_opts(@key, @value)

        error = assert_raise ArgumentError, fn -> Options.validate(:stream, "true", [], opts) end
        assert error.message =~ inspect(@key)
        # ... and open/3 raises the same before starting anything.
        assert_raise ArgumentError, error.message, fn -> ProtonStream.open("true", [], opts) end
      end
    end

    test "with :node the command is kept as given: the node looks it up" do
      assert Options.validate(:stream, "no_such_program_xyz", ["a"], node: :ps@host) ==
               %{command: "no_such_program_xyz", args: ["a"], node: :ps@host}

      assert %{command: "echo", node: :ps@host, flow: :ack, stdin_limit: 10} =
               Options.validate(:stream, "echo", [],
                 node: :ps@host,
                 flow: :ack,
                 stdin_limit: 10
               )
    end

    test "node: nil is port mode" do
      assert Options.validate(:stream, "echo", [], node: nil) ==
               %{command: System.find_executable("echo"), args: []}

      assert_raise ErlangError, fn ->
        Options.validate(:stream, "no_such_program_xyz", [], node: nil)
      end
    end

    test ":flow needs :node, and is :queue_len or :ack" do
      assert_raise ArgumentError, ~r/:flow: it applies to node mode only/, fn ->
        Options.validate(:stream, "echo", [], flow: :ack)
      end

      assert_raise ArgumentError, ~r/:flow/, fn ->
        Options.validate(:stream, "echo", [], node: :ps@host, flow: :fast)
      end

      assert_raise ArgumentError, ~r/:flow: callback mode always uses flow: :ack/, fn ->
        ProtonStream.start_link(ProtonStreamTest.Cases.Callback.Bare, "cat", [], [],
          node: :ps@host,
          flow: :ack
        )
      end
    end

    test "the :callback context (start_link/5) refuses :flow with :node, as callback mode always acks" do
      assert_raise ArgumentError, ~r/:flow: callback mode always uses flow: :ack/, fn ->
        Options.validate(:callback, "cat", [], node: :ps@host, flow: :queue_len)
      end

      assert %{node: :ps@host} = Options.validate(:callback, "cat", [], node: :ps@host)
      assert %{flow: :ack} = Options.validate(:stream, "cat", [], node: :ps@host, flow: :ack)
    end

    test "a node's limits are checked here, naming the option" do
      for {key, value} <- [
            delay_to_sigkill: 600_001,
            stdio_window: 64 * 1024 * 1024 + 1,
            stdin_limit: 256 * 1024 * 1024 + 1
          ] do
        assert_raise ArgumentError, ~r/#{inspect(key)}.*at most/, fn ->
          Options.validate(:stream, "echo", [], [{key, value}, node: :ps@host])
        end

        # Port mode has no such limits.
        assert %{^key => ^value} = Options.validate(:stream, "echo", [], [{key, value}])
      end
    end

    test "option combinations that cannot work raise ArgumentError naming the options" do
      error =
        assert_raise ArgumentError, fn ->
          Options.validate(:stream, "true", [],
            cgroup_controllers: ["cpu"],
            cgroup_path: "a",
            cgroup_base: "b"
          )
        end

      assert error.message =~ ":cgroup_path" and error.message =~ ":cgroup_base"

      # proton_stream 1.8.3 accepts the pair; :capture_stderr_only wins.
      options =
        Options.validate(:stream, "true", [], stderr_to_stdout: true, capture_stderr_only: true)

      assert options.capture_stderr_only == true
      refute Map.has_key?(options, :stderr_to_stdout)

      assert_raise ArgumentError, ~r/:cgroup_sets.*"memory" in :cgroup_controllers/, fn ->
        Options.validate(:stream, "true", [],
          cgroup_base: "b",
          cgroup_sets: [{"memory", "memory.limit_in_bytes", "1"}]
        )
      end

      assert_raise ArgumentError,
                   ~r/:cgroup_controllers: it needs :cgroup_path or :cgroup_base/,
                   fn ->
                     Options.validate(:stream, "true", [], cgroup_controllers: ["cpu"])
                   end

      assert_raise ArgumentError, ~r/invalid options :isolated and :node/, fn ->
        ProtonStream.open("true", [], isolated: true, node: :ps@host)
      end
    end

    test ":isolated is a boolean, kept as given; isolated: false is the shared ps_port" do
      assert %{isolated: true} = Options.validate(:stream, "true", [], isolated: true)
      assert %{isolated: false} = Options.validate(:stream, "true", [], isolated: false)

      assert ProtonStream.Transport.for_options(%{isolated: true}) ==
               ProtonStream.Transport.Isolated

      assert ProtonStream.Transport.for_options(%{isolated: false}) ==
               ProtonStream.Transport.Shared

      assert ProtonStream.Transport.for_options(%{node: :a@b}) == ProtonStream.Transport.Remote
    end
  end

  # :cgroup_sets is only checked with a cgroup to apply to.
  defp bad_opts(:cgroup_sets, value),
    do: [cgroup_controllers: ["memory"], cgroup_path: "g", cgroup_sets: value]

  defp bad_opts(key, value), do: [{key, value}]
end
