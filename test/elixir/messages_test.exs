defmodule ProtonStreamTest.MessagesTest do
  # Message mode through the VM's shared ps_port (the default): the shared
  # tests (support/messages_cases.exs), and the functions that start no
  # program. What a local server does is in local_test.exs.
  use ExUnit.Case, async: true
  use ProtonStreamTest.Cases.Messages, mode: :shared

  test "signal/2 raises for unknown signals" do
    assert_raise ArgumentError, ~r/unknown signal :sigfoo/, fn ->
      ProtonStream.signal(self(), :sigfoo)
    end

    assert_raise ArgumentError, ~r/invalid signal 0/, fn -> ProtonStream.signal(self(), 0) end
    assert_raise ArgumentError, fn -> ProtonStream.signal(self(), 65) end
  end

  test "muontrap_path is the absolute path of the ps_port executable" do
    path = ProtonStream.muontrap_path()
    assert Path.type(path) == :absolute
    assert String.ends_with?(path, "/priv/ps_port")
    assert %{type: :regular, mode: mode} = File.stat!(path)
    assert Bitwise.band(mode, 0o111) != 0
  end
end
