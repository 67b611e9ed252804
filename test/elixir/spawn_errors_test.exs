defmodule ProtonStreamTest.SpawnErrorsTest do
  # Spawn errors in words through the VM's shared ps_port (support/spawn_error_cases.exs).
  use ExUnit.Case, async: true
  use ProtonStreamTest.Cases.SpawnErrors, mode: :shared
end
