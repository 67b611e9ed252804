defmodule ProtonStreamTest.ReliabilityInputTest do
  # Hostile and malformed input through the shim, with the shared ps_port,
  # with isolated: true, and in node mode
  # (docs/reliability.md): NUL bytes in every string option, bytes that are
  # not UTF-8, huge environments, unknown users, and 1 GiB of stdin.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  alias ProtonStreamTest.{Helpers, Mode}

  @moduletag timeout: 300_000

  # Every option that takes a string, with a NUL byte in it.
  @nul_options [
    cd: "/tm\0p",
    arg0: "ze\0ro",
    env: [{"A\0B", "1"}],
    env: [{"A", "1\0"}],
    uid: "nob\0ody",
    gid: "nog\0roup",
    cgroup_controllers: ["mem\0ory"],
    cgroup_path: "a\0b",
    cgroup_base: "a\0b",
    cgroup_sets: [{"memory", "memory.limit_in_bytes", "1\0"}],
    cgroup_sets: [{"memory", "memory.limit\0_in_bytes", "1"}]
  ]

  for mode <- [:shared, :isolated, :node] do
    describe "#{mode} mode" do
      @describetag mode: mode
      setup %{mode: mode}, do: Mode.context(mode)

      test "a NUL byte in any string option raises ArgumentError naming it", %{m: m} do
        for {key, value} <- @nul_options do
          opts = [{key, value}] ++ m

          opts =
            if key in [:cgroup_path, :cgroup_base, :cgroup_sets],
              do: [cgroup_controllers: ["memory"]] ++ opts,
              else: opts

          error = assert_raise ArgumentError, fn -> ProtonStream.open("cat", [], opts) end
          assert error.message =~ inspect(key), "#{inspect(key)}: #{error.message}"
        end

        assert_raise ArgumentError, ~r/null/, fn -> ProtonStream.open("ca\0t", [], m) end
        assert_raise ArgumentError, ~r/null/, fn -> ProtonStream.open("cat", ["a\0"], m) end
      end

      test "arguments, stdin and output that are not UTF-8 pass through as they are", %{m: m} do
        all = for b <- 0..255, into: <<>>, do: <<b>>
        arg = <<0xFF, 0xFE, ?a, 0xC3, 0x28, 0x80, 0xED, 0xA0, 0x80, ?\n, 1, 0x7F>>
        {:ok, ps} = ProtonStream.open("sh", ["-c", ~S{printf '%s' "$1"; cat}, "sh", arg], m)
        ProtonStream.command(ps, all)
        ProtonStream.eof(ps)
        assert %{stdout: out, exit: :normal} = Helpers.collect(ps)
        assert out == arg <> all
      end

      test "an environment that is not UTF-8 raises ArgumentError (not a crash)", %{m: m} do
        assert_raise ArgumentError, ~r/:env.*UTF-8/, fn ->
          ProtonStream.open("true", [], [env: [{"V", <<0xFF, 0xFE>>}]] ++ m)
        end

        assert_raise ArgumentError, ~r/:env.*UTF-8/, fn ->
          ProtonStream.open("true", [], [env: [{<<0xFF>>, "v"}]] ++ m)
        end
      end

      test "UTF-8 in the environment arrives byte for byte", %{m: m} do
        value = "é€ü😀"

        {:ok, ps} =
          ProtonStream.open("sh", ["-c", ~S{printf '%s' "$V"}], [env: [{"V", value}]] ++ m)

        assert %{stdout: ^value, exit: :normal} = Helpers.collect(ps)
      end

      test "unknown users and groups are refused with a spawn error", %{m: m} do
        assert {:error, {:spawn_error, :baduser, msg}} =
                 ProtonStream.open("true", [], [uid: "no_such_user_xyz"] ++ m)

        assert msg =~ "no_such_user_xyz"

        assert {:error, {:spawn_error, :badgroup, _}} =
                 ProtonStream.open("true", [], [gid: "no_such_group_xyz"] ++ m)
      end

      test "a 100 KiB environment value arrives whole", %{m: m} do
        big = String.duplicate("b", 102_400)

        {:ok, ps} =
          ProtonStream.open(
            "sh",
            ["-c", ~S{printf %s "$BIG" | wc -c}],
            [env: [{"BIG", big}]] ++ m
          )

        assert %{stdout: "102400\n", exit: :normal} = Helpers.collect(ps)
      end

      test "strings past the kernel's 128 KiB raise ArgumentError; a 3 MiB environment is refused",
           %{m: m, mode: mode} do
        big = String.duplicate("b", 200_000)

        assert_raise ArgumentError, ~r/:env.*kernel takes at most 131071/, fn ->
          ProtonStream.open("true", [], [env: [{"BIG", big}]] ++ m)
        end

        assert_raise ArgumentError, ~r/kernel takes for one argument/, fn ->
          ProtonStream.open("true", [big], m)
        end

        env = for i <- 1..30, do: {"V#{i}", String.duplicate("v", 100_000)}

        assert {:error, {:spawn_error, reason, msg}} =
                 ProtonStream.open("true", [], [env: env] ++ m)

        case mode do
          # ps_port's own exec would fail (the env goes on its command
          # line): refused before, with the sizes.
          :isolated ->
            assert reason == :e2big
            assert msg =~ "30 :env variables of 3000"
            assert msg =~ "ARG_MAX"

          # The program's own exec is refused (the shared ps_port gets the
          # environment in a frame), and ps_port says so.
          :shared ->
            assert {reason, msg =~ "argument list too long"} == {:e2big, true}

          :node ->
            assert {reason, msg =~ "argument list too long"} == {:e2big, true}
        end
      end
    end
  end

  # 1 GiB of stdin, 64 KiB at a time, as fast as ProtonStream.command/2 takes
  # it, into wc -c. Every byte is either counted by wc or refused with
  # stdin_overflow: every mode sends the owner
  # {ps, {:error, :stdin_overflow, message}} (the local ones also log it).
  for mode <- [:shared, :isolated, :node] do
    @tag mode: mode
    test "1 GiB of stdin into wc -c: counted or refused, never lost (#{mode} mode)", %{mode: mode} do
      %{m: m} = Mode.context(mode)
      chunk = :binary.copy("z", 65_536)
      n = 16_384
      {:ok, ps} = ProtonStream.open("wc", ["-c"], m)

      {result, log} =
        with_log(fn ->
          for _ <- 1..n, do: ProtonStream.command(ps, chunk)
          ProtonStream.eof(ps)
          Helpers.collect(ps, 120_000)
        end)

      assert %{stdout: counted, exit: :normal} = result
      counted = counted |> String.trim() |> String.to_integer()

      refused = length(for {^ps, {:error, :stdin_overflow, _}} <- flush(), do: :refused)

      if mode != :node do
        assert length(Regex.scan(~r/stdin_overflow: (\d+) bytes for stdin refused/, log)) ==
                 refused
      end

      if System.get_env("RELIABILITY_REPORT") do
        IO.puts(
          "\n#{mode} mode: 1 GiB into wc -c: #{counted} bytes counted, #{refused} commands refused"
        )
      end

      assert counted + refused * 65_536 == n * 65_536
    end
  end

  defp flush do
    receive do
      m -> [m | flush()]
    after
      0 -> []
    end
  end
end
