import org.jetbrains.kotlin.gradle.dsl.JvmTarget

// The phi-mobile library as an AAR: the UniFFI-generated bindings and the hand-written Kotlin
// layer (compiled from bindings/kotlin, not copied), libphi_mobile.so for each ABI (built by
// cargo-ndk through scripts/build-android.sh), JNA's Android build, and R8 rules for apps.
plugins {
    alias(libs.plugins.android.library)
    alias(libs.plugins.kotlin.android)
}

// Coordinates for composite builds: an app's settings can `includeBuild("…/phi-mobile/android")`
// and depend on "dev.phimobile:phimobile".
group = "dev.phimobile"
version = "0.1.0"

// Relative to this module, not the root project, so it also holds inside someone else's build.
val repoRoot: File = projectDir.resolve("../..").canonicalFile
val jniLibsDir = layout.projectDirectory.dir("src/main/jniLibs")
val abis = listOf("arm64-v8a", "armeabi-v7a", "x86_64")

android {
    namespace = "dev.phimobile"
    compileSdk = 36

    defaultConfig {
        // 26 (Android 8.0): a phone that can hold a 2-4 GB model in memory runs Android 8 or
        // newer anyway, and 26 is what the Rust side is linked for (--platform in
        // scripts/build-android.sh), so the .so never references libc symbols a device lacks.
        minSdk = 26
        consumerProguardFiles("consumer-rules.pro")
    }

    sourceSets {
        getByName("main") {
            // Kotlin in a java source dir is compiled by the Kotlin plugin: the generated
            // phi_mobile.kt and the PhiMobile.kt layer, exactly what the JVM tests run. The
            // native libraries come from the default src/main/jniLibs.
            java.srcDir(repoRoot.resolve("bindings/kotlin/src/main/kotlin"))
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    compilerOptions { jvmTarget.set(JvmTarget.JVM_17) }
}

dependencies {
    // The @aar artifact: the plain jar has only desktop natives, and on a phone JNA then fails
    // with "libjnidispatch.so not found in resource path". `api`: the bindings' public classes
    // extend JNA types and their API exposes coroutines, so apps compile against both.
    api(libs.jna) { artifact { type = "aar" } }
    api(libs.kotlinx.coroutines.android)
}

// cargo-ndk → src/main/jniLibs/<abi>/libphi_mobile.so. Gradle reruns it only when the Rust
// sources change; cargo itself is incremental on top of that.
val cargoNdkBuild = tasks.register<Exec>("cargoNdkBuild") {
    group = "build"
    description = "Builds libphi_mobile.so for ${abis.joinToString()} (scripts/build-android.sh)."
    workingDir = repoRoot
    commandLine("bash", repoRoot.resolve("scripts/build-android.sh").path)
    inputs.files(
        fileTree(repoRoot.resolve("src")),
        repoRoot.resolve("Cargo.toml"),
        repoRoot.resolve("Cargo.lock"),
        repoRoot.resolve(".cargo/config.toml"),
        repoRoot.resolve("scripts/build-android.sh"),
    )
    outputs.dir(jniLibsDir)
}

// With -Pphimobile.buildRust=false the libraries must already be there: fail early and clearly
// rather than ship an AAR that crashes with UnsatisfiedLinkError at the first call.
val checkJniLibs = tasks.register("checkJniLibs") {
    val dir = jniLibsDir.asFile
    doLast {
        val missing = abis.filterNot { dir.resolve("$it/libphi_mobile.so").isFile }
        if (missing.isNotEmpty()) {
            throw GradleException(
                "no libphi_mobile.so for ${missing.joinToString()} in $dir: run scripts/build-android.sh, " +
                    "or build with -Pphimobile.buildRust=true",
            )
        }
    }
}

val buildRust = providers.gradleProperty("phimobile.buildRust").map(String::toBoolean).getOrElse(true)
checkJniLibs.configure { if (buildRust) dependsOn(cargoNdkBuild) }
tasks.named("preBuild") { dependsOn(checkJniLibs) }
