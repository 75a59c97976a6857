defmodule VarBridge.CodecTest do
  use ExUnit.Case, async: true

  alias VarBridge.{Error, Tensor, Value, Variable}

  defp field(n, bin), do: <<n * 8 + 2, byte_size(bin)>> <> bin

  defp error_info(reason, md) do
    entries = for {k, v} <- md, into: "", do: field(3, field(1, k) <> field(2, v))
    field(1, reason) <> field(2, "varbridge.dev") <> entries
  end

  test "a Connect error is read from its ErrorInfo detail, not its message" do
    info =
      error_info("CONSTRAINT_VIOLATION", [{"variable", "temperature"}, {"constraint", "max"}])

    body =
      VarBridge.JSON.encode!(%{
        "code" => "invalid_argument",
        "message" => "some words",
        "details" => [
          %{"type" => "google.rpc.BadRequest", "value" => "AAAA"},
          %{"type" => "google.rpc.ErrorInfo", "value" => Base.encode64(info, padding: false)}
        ]
      })

    assert %Error{
             code: :invalid_argument,
             reason: :constraint_violation,
             message: "some words",
             details: %{"variable" => "temperature", "constraint" => "max"}
           } = Error.from_connect(400, body)
  end

  test "unknown reasons stay strings; unknown codes are :unknown" do
    info = Base.encode64(error_info("SOMETHING_NEW", []))

    e =
      Error.from_map("weird", %{
        "details" => [%{"type" => "google.rpc.ErrorInfo", "value" => info}]
      })

    assert %Error{code: :unknown, reason: "SOMETHING_NEW", details: %{}} = e
  end

  test "ErrorInfo with varint and fixed fields it does not know, and a broken one" do
    bin =
      <<0x20, 0x96, 0x01>> <>
        error_info("VERSION_CONFLICT", [{"actual_version", "3"}]) <> <<0x2D, 1, 2, 3, 4>>

    assert {:ok, %{reason: "VERSION_CONFLICT", metadata: %{"actual_version" => "3"}}} =
             Error.decode_error_info(bin)

    assert :error = Error.decode_error_info(<<0x0A, 10, "short">>)
  end

  test "a non-Connect error body keeps the HTTP status's code" do
    assert %Error{code: :unavailable, reason: nil} = Error.from_connect(503, "<html>")
  end

  test "values to the wire" do
    assert Value.to_wire(3, nil) == {:ok, %{"intValue" => "3"}}
    assert Value.to_wire(3, :float) == {:ok, %{"floatValue" => 3.0}}
    assert Value.to_wire(0.5, nil) == {:ok, %{"floatValue" => 0.5}}
    assert Value.to_wire(:nan, nil) == {:ok, %{"floatValue" => "NaN"}}
    assert Value.to_wire("x", :choice) == {:ok, %{"stringValue" => "x"}}
    assert Value.to_wire(false, nil) == {:ok, %{"boolValue" => false}}
    assert Value.to_wire([1, 2.5], nil) == {:ok, %{"embeddingValue" => %{"values" => [1.0, 2.5]}}}

    assert Value.to_wire(%Tensor{shape: [2], dtype: "uint8", data: <<1, 2>>}, nil) ==
             {:ok, %{"tensorValue" => %{"shape" => ["2"], "dtype" => "uint8", "data" => "AQI="}}}

    assert Value.to_wire(%{a: 1}, nil) == :error
    assert Value.to_wire([1, "x"], nil) == :error
  end

  test "values from protobuf JSON and from watch JSON" do
    assert Value.from_wire(%{"intValue" => "9007199254740993"}) == 9_007_199_254_740_993
    assert Value.from_wire(%{"floatValue" => 20}) == 20.0
    assert Value.from_wire(%{"floatValue" => "-Infinity"}) == :neg_infinity
    assert Value.from_wire(%{"embeddingValue" => %{}}) == []

    assert Value.from_wire(%{
             "tensorValue" => %{"shape" => ["1"], "dtype" => "uint8", "data" => "Bw"}
           }) ==
             %Tensor{shape: [1], dtype: "uint8", data: <<7>>}

    assert Value.from_json(20, :float) == 20.0
    assert Value.from_json(20, :integer) == 20
    assert Value.from_json([1, "NaN"], :embedding) == [1.0, :nan]
    assert Value.from_json(nil, :float) == nil

    assert Value.from_json(%{"shape" => [], "dtype" => "bool", "data" => "AQ=="}, :tensor) ==
             %Tensor{shape: [], dtype: "bool", data: <<1>>}
  end

  test "constraints both ways, unknown ones refused" do
    {:ok, wire} =
      Value.constraints_to_wire(min: 0, max: 2.0, max_length: 5, shape: [-1, 3], choices: ["a"])

    assert wire == %{
             "min" => 0.0,
             "max" => 2.0,
             "maxLength" => "5",
             "shape" => ["-1", "3"],
             "choices" => ["a"]
           }

    assert Value.constraints_from_wire(wire) == %{
             min: 0.0,
             max: 2.0,
             max_length: 5,
             shape: [-1, 3],
             choices: ["a"]
           }

    assert Value.constraints_to_wire(maximum: 1) == {:error, :maximum}
  end

  test "a variable from protobuf JSON, with zero fields omitted" do
    v =
      Variable.from_wire(%{
        "id" => "v1",
        "name" => "t",
        "type" => "VARIABLE_TYPE_FLOAT",
        "value" => %{"floatValue" => 1},
        "version" => "2",
        "updatedAt" => "2026-11-28T20:13:54.123456789Z"
      })

    assert %Variable{
             id: "v1",
             name: "t",
             type: :float,
             value: 1.0,
             version: 2,
             revision: 0,
             metadata: %{}
           } = v

    assert v.updated_at == ~U[2026-11-28 20:13:54.123456Z]
  end

  test "JSON: nil is null both ways" do
    assert VarBridge.JSON.encode!(%{"a" => nil}) == ~s({"a":null})
    assert VarBridge.JSON.decode(~s({"a":null})) == {:ok, %{"a" => nil}}
    assert {:error, {:invalid_json, _}} = VarBridge.JSON.decode("{")
  end
end
