defmodule ProtonStreamTest.SpawnErrorsTest do
  # Spawn errors in words through a port (support/spawn_error_cases.exs).
  use ExUnit.Case, async: true
  use ProtonStreamTest.Cases.SpawnErrors, mode: :port
end
