defmodule ProtonStreamTest.Isolated.SpawnErrorsTest do
  # Spawn errors in words (support/spawn_error_cases.exs) with isolated: true.
  use ExUnit.Case, async: true
  @moduletag :isolated
  use ProtonStreamTest.Cases.SpawnErrors, mode: :isolated
end
