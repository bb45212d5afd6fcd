plugins {
    id("com.android.application")
}

android {
    namespace = "org.restv2edge.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "org.restv2edge.demo"
        minSdk = 28
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        ndk {
            // the ABIs the ExecuTorch AAR ships
            abiFilters += listOf("arm64-v8a", "x86_64")
        }
    }

    buildTypes {
        release {
            isMinifyEnabled = false
            // demo only: sign with the debug key so `assembleRelease` installs without a keystore
            signingConfig = signingConfigs.getByName("debug")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    androidResources {
        // the model is copied out of the APK once; keep it uncompressed so that copy is cheap
        noCompress += "pte"
    }
}

dependencies {
    // Must match the ExecuTorch version that wrote the .pte (restv2-edge pins executorch==1.5.1).
    implementation("org.pytorch:executorch-android:1.5.1")
    implementation("androidx.activity:activity:1.9.3")
    implementation("androidx.core:core:1.13.1")

    // JVM unit tests of the plain-Java core against golden vectors (RESTV2_GOLDEN=DIR)
    testImplementation("org.junit.jupiter:junit-jupiter:5.9.2")
    testRuntimeOnly("org.junit.platform:junit-platform-launcher:1.9.2")
}

tasks.withType<Test>().configureEach {
    useJUnitPlatform()
    systemProperty("restv2.golden", System.getenv("RESTV2_GOLDEN") ?: "")
    systemProperty("restv2.artifact", System.getenv("RESTV2_ARTIFACT") ?: "")
    testLogging {
        events("passed", "skipped", "failed")
        showStandardStreams = true
    }
}
