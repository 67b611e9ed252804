defmodule ProtonStreamTest.LimitsTest do
  # ProtonStream.Limits reads the table ps_port embeds
  # (internal/limits/limits.txt), so the shim and the binaries agree by
  # construction; these tests check it from outside, against the binaries:
  # each bound is taken at the table's value and refused one past it.
  use ExUnit.Case, async: true

  alias ProtonStream.{Limits, Options}

  @bounds [
    stdio_window: :stdio_window_max,
    stdin_limit: :stdin_limit_max,
    delay_to_sigkill: :delay_to_sigkill_max_ms
  ]

  test "fetch!/1 raises for a name the table does not have" do
    assert Limits.fetch!(:stdin_limit_default) == Limits.all().stdin_limit_default
    assert_raise KeyError, fn -> Limits.fetch!(:no_such_limit) end
  end

  test "the shared ps_port takes the table's bounds and refuses one past them" do
    for {key, name} <- @bounds do
      max = Limits.fetch!(name)

      assert {:error, {:spawn_error, :badarg, message}} =
               ProtonStream.open("true", [], [{key, max + 1}])

      assert message =~
               "#{key}: want an integer #{if key == :delay_to_sigkill, do: 0, else: 1}..#{max}, got #{max + 1}"

      assert {:ok, ps} = ProtonStream.open("true", [], [{key, max}])
      assert_receive {:EXIT, ^ps, :normal}, 10_000
    end
  end

  @tag :node
  test "a node takes the table's bounds; one past them is refused here, naming the bound" do
    node = ProtonStreamTest.Mode.node_name()

    for {key, name} <- @bounds do
      max = Limits.fetch!(name)

      assert_raise ArgumentError, ~r/#{inspect(key)}.*at most #{max} with :node/, fn ->
        Options.validate(:stream, "true", [], [{key, max + 1}, node: node])
      end

      assert {:ok, ps} = ProtonStream.open("true", [], [{key, max}, node: node])
      assert_receive {:EXIT, ^ps, :normal}, 10_000
    end
  end

  test "ps_port node's --max-request bounds are the table's, here and in the binary" do
    min = Limits.fetch!(:max_request_min)
    max = Limits.fetch!(:max_request_max)

    for bad <- [min - 1, max + 1] do
      assert_raise ArgumentError, ~r/:max_request/, fn ->
        ProtonStream.Node.start_link(allow_any: true, max_request: bad)
      end

      # The flag is checked before the node starts anything.
      {out, status} =
        System.cmd(
          ProtonStream.Port.executable(),
          ["node", "--name", "limits_test@127.0.0.1", "--allow-any", "--max-request", "#{bad}"],
          stderr_to_stdout: true
        )

      assert status != 0
      assert out =~ "--max-request must be #{min}..#{max} (bytes), got #{bad}"
    end
  end
end
