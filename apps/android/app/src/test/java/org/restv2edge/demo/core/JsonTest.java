package org.restv2edge.demo.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class JsonTest {
  @Test
  void parsesNestedValues() {
    Object root =
        Json.parse(
            " {\"a\": [1, -2.5e3, 0.125, true, false, null], \"b\": {\"c\": \"x\\\"y\\\\z\"},"
                + " \"d\": [], \"e\": {}} ");
    Map<?, ?> map = (Map<?, ?>) root;
    List<?> a = (List<?>) map.get("a");
    assertEquals(Arrays.asList(1.0, -2500.0, 0.125, true, false, null), a);
    assertEquals("x\"y\\z", ((Map<?, ?>) map.get("b")).get("c"));
    assertTrue(((List<?>) map.get("d")).isEmpty());
    assertTrue(((Map<?, ?>) map.get("e")).isEmpty());
  }

  @Test
  void decodesUnicodeEscapesAndSurrogatePairs() {
    assertEquals("é→😀", Json.parse("\"\\u00e9\\u2192\\ud83d\\ude00\""));
    assertEquals("tab\there", Json.parse("\"tab\\there\""));
  }

  @Test
  void keepsFloat32ValuesExact() {
    float value = 0.3882230520248413f;
    assertEquals(value, ((Number) Json.parse("0.3882230520248413")).floatValue());
  }

  @Test
  void nullLiteral() {
    assertNull(Json.parse("null"));
  }

  @Test
  void rejectsMalformedJson() {
    for (String bad :
        new String[] {"", "{", "[1,]", "{\"a\" 1}", "01", "1.", "\"open", "tru", "[1] x", "{'a':1}"}) {
      IllegalArgumentException e =
          assertThrows(IllegalArgumentException.class, () -> Json.parse(bad), bad);
      assertTrue(e.getMessage().startsWith("invalid JSON at offset"), e.getMessage());
    }
  }
}
